"""The catalogue of RTL units and the configurations that ``make verilog`` and ``make synth`` build.

Each entry maps a configuration name to a constructor, so tools and reports
share one list instead of repeating parameters.
"""

from .systolic import SystolicArray

__all__ = ["UNITS"]

#: name -> zero-argument constructor of a ``wiring.Component``.
UNITS = {
    "systolic_4x4": lambda: SystolicArray(4, 4),
    "systolic_8x8": lambda: SystolicArray(8, 8),
    "systolic_8x8_k2": lambda: SystolicArray(8, 8, k_lanes=2),
}
