"""Errors that mean "the user gave bad graph input" (a bad file, an unknown node id), not bugs.

`launch/` prints these as one `error: ...` line; library callers can catch them by type. `graphs/`
keeps its own error type because it imports nothing from `swiftjax/`.
"""


class GraphError(ValueError):
  """Graph data or a request about a graph is invalid: the message names the file, line or id."""
