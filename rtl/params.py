"""Construction-time parameter checks shared by every RTL unit.

Errors name the parameter and its allowed range, and are raised from the
constructor, before anything is elaborated.
"""

import contextlib

from amaranth.lib import wiring

__all__ = ["check_int", "validating", "ConfigComponent"]


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


class ConfigComponent(wiring.Component):
    """A ``wiring.Component`` built from one config object: the config's type is checked
    at construction (``TypeError`` naming it), the ports come from :meth:`members`, and
    the config stays readable as :attr:`config`.

    Subclasses set ``config_type`` and define ``members(config)``, returning the
    signature's members (a dict of ``In`` / ``Out``).
    """

    config_type = None

    def __init__(self, config):
        with validating(self):
            if not isinstance(config, self.config_type):
                name = self.config_type.__name__
                article = "an" if name[0] in "AEIOU" else "a"
                raise TypeError(f"config must be {article} {name}, not {config!r}")
        self._config = config
        super().__init__(self.members(config))

    @property
    def config(self):
        return self._config

    def members(self, config):
        raise NotImplementedError(f"{type(self).__name__} must define members(config)")
