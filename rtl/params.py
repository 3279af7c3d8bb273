"""Construction-time parameter checks shared by every RTL unit.

Errors name the parameter and its allowed range, and are raised from the
constructor, before anything is elaborated.
"""

import contextlib

__all__ = ["check_int", "validating"]


def check_int(name, value, lo, hi):
    """Return ``value`` if it is an int (not a bool) in ``[lo, hi]``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


@contextlib.contextmanager
def validating(component):
    """Run a constructor's checks; if one fails, the half-built component is discarded quietly.

    Amaranth warns when an ``Elaboratable`` is created and never elaborated; a
    component whose constructor raised is not a user error of that kind.
    """
    try:
        yield
    except (ValueError, TypeError):
        component._MustUse__silence = True
        raise
