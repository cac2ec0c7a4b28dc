"""Errors that mean "the user asked for something wrong", as opposed to bugs.

Launchers print these as one line (no traceback); library callers can catch them by type.
"""


class SwiftJaxError(Exception):
  """Base class for user-facing errors: bad paths, bad configs, bad checkpoints."""


class CheckpointError(SwiftJaxError):
  """A checkpoint file or directory is missing, truncated, corrupted or does not fit the model."""


class ConfigError(SwiftJaxError):
  """A configuration value is invalid or unsupported."""
