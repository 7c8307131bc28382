"""perfgate: a performance-regression release gate.

What is listed in ``__all__`` is the public API; everything else may change between releases.
"""

from perfgate._version import __version__
from perfgate.errors import PerfgateError

__all__ = ["PerfgateError", "__version__"]
