"""One module per operator family; importing them registers their converters."""
from . import activation, conv, linear, merge, norm, pool, shape  # noqa: F401
