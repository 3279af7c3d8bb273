"""``make verilog``: elaborate every unit of :data:`rtl.units.UNITS` to ``build/verilog/<name>.v``.

Usage: ``python -m sim.elaborate [NAME ...]`` (default: all). Files are
rewritten only when their text changes.
"""

import argparse

from rtl.units import UNITS

from .verilog import emit_verilog
from .waves import BUILD_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description="Elaborate RTL units to Verilog.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"units to elaborate (default: all of {', '.join(UNITS)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in UNITS]
    if unknown:
        parser.error(f"unknown unit {unknown[0]!r}; choose from {', '.join(UNITS)}")
    for name in args.names or UNITS:
        path = emit_verilog(UNITS[name](), BUILD_DIR / "verilog" / f"{name}.v", name="top")
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
