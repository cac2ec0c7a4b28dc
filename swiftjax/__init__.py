"""swiftjax: fine-tune, run, evaluate, quantize and export LLMs as pure JAX functions.

Submodules are imported explicitly (`from swiftjax import models`), so importing the package
has no side effects and does not initialise JAX.
"""

__version__ = "0.1.0"
