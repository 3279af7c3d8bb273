"""Frame throughput: this project at each preset next to Edge-MoE and CoQMoE, and the ablation
of the throughput levers (issue: frame throughput).

Every figure comes from the schedule model (:mod:`moevit.schedule`) on M3ViT-tiny with
seeded weights and dual-stage W8A8 (the model of ``make program``); the RTL top equals
that model cycle for cycle (``make frame`` measures it).

* **Side by side**: cycles per frame (task 0), frames/s at an **assumed** 300 MHz (no
  vendor tool has timed the design), MAC units (the linear kernel's and the attention
  score pass's multipliers), the estimated DSP48E2s (:func:`platforms.resources.dsp_by_unit`), the
  linear kernel's MAC utilisation, the frame-wide one (useful linear and attention-score
  MACs over all MAC units times the cycles) and the DRAM bytes read per frame.
* **Ablation**: per device, the levers stacked one at a time from the presets of the
  first RTL frames (``BASELINE``), each row's gain over the row before it. One lever
  is not a field and is in every row: the attention kernel takes K and V side by
  side, loads the next Q block during pass 1 and keeps two V buffers (at the final
  kernel shapes without the other levers it took zcu102 from 635,012 to 602,300
  cycles and u280 from 470,556 to 436,692).

Usage: ``python -m bench.throughput [--preset u280 ...] [--seed 0]``; writes
``build/bench/throughput.json``.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.program import quantized_model
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.schedule import schedule
from platforms.resources import dsp_by_unit
from rtl.config import PRESETS
from sim.waves import BUILD_DIR

ASSUMED_MHZ = 300
#: The anchors (``shared/reference/anchors.md``): cycles per frame, and where they come from.
ANCHORS = {"Edge-MoE": (5_300_000, "compute only, estimate"),
           "CoQMoE": (1_940_000, "~155 frames/s at 300 MHz")}
#: The presets the first whole frames ran on (16x16x3 / 16x16x6 linear, 24 / 32 attention
#: rows), the starting point of the ablation.
BASELINE = {"zcu102": {"linear.pi": 16, "linear.po": 16, "attention.dp": 16, "linear.t": 3,
                       "attention.r": 24, "norm_lanes": 16, "overlap_attention": False},
            "u280": {"linear.pi": 16, "linear.po": 16, "attention.dp": 16, "linear.t": 6,
                     "attention.r": 32, "norm_lanes": 16, "overlap_attention": False}}
#: The levers, in the order they are stacked: (name, the fields they set from the preset).
#: A lever that leaves a device's fields as they are (its preset keeps the baseline's
#: value) gets no row there.
LEVERS = (("buffer word (lever 2)", ("linear.pi", "linear.po", "attention.dp")),
          ("token lanes (lever 2)", ("linear.t",)),
          ("attention rows per block (lever 2)", ("attention.r",)),
          ("LayerNorm lanes (lever 2)", ("norm_lanes",)),
          ("attention beside the next head group's qkv (lever 3)", ("overlap_attention",)))
#: Levers that are compiler options (on in every preset's program), not config fields.
COMPILER = ("overlap_attention",)


def _get(config, key):
    if key in COMPILER:
        return True
    part, _, name = key.rpartition(".")
    return getattr(getattr(config, part) if part else config, name)


def with_fields(config, fields):
    """``config`` with fields replaced, a part's by a dotted name (``{"linear.t": 8,
    "norm_lanes": 32}``)."""
    top, parts = {}, {}
    for key, value in fields.items():
        part, _, name = key.rpartition(".")
        (parts.setdefault(part, {}) if part else top)[name] = value
    return dataclasses.replace(config, **top, **{
        part: dataclasses.replace(getattr(config, part), **f) for part, f in parts.items()})


def measure(config, qp, pixels, **options):
    """Schedule-model figures of task 0 of M3ViT-tiny on ``config`` (``options``: the
    compiler's)."""
    compiled = compile_model(qp, config, **options)
    _, run = execute(compiled, pixels, 0)
    sched = schedule(config, run)
    units = config.linear.macs + config.attention.macs
    return {"config": config.to_dict(), "cycles": sched.cycles,
            "fps_at_assumed_300mhz": round(ASSUMED_MHZ * 1e6 / sched.cycles, 1),
            "mac_units": units, "dsp_estimate": sum(dsp_by_unit(config, "xcup").values()),
            "linear_utilisation": round(sched.macs / config.linear.macs / sched.cycles, 4),
            "frame_mac_utilisation": round((sched.macs + sched.attention_macs)
                                           / units / sched.cycles, 4),
            "dram_read_bytes": sched.dram_read_bytes,
            "unit_share": {u: round(b / sched.cycles, 4) for u, b in sched.busy.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Frame throughput per preset and the ablation "
                                                 "of the throughput levers.")
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS),
                        help="presets to evaluate (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=BUILD_DIR / "bench" / "throughput.json")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    with console.status("M3ViT-tiny: seeded weights, dual-stage PTQ"):
        qp, pixels = quantized_model(args.seed)
    report = {"model": qp.config.name, "clock_mhz_assumed": ASSUMED_MHZ,
              "anchors": {k: {"cycles": c, "source": s} for k, (c, s) in ANCHORS.items()},
              "presets": {}, "ablation": {}}
    names = args.preset or list(PRESETS)
    for name in names:
        with console.status(f"{name}: compile, execute, schedule"):
            config = PRESETS[name]()
            report["presets"][name] = measure(config, qp, pixels)
    for name, start in BASELINE.items():
        if name not in names:
            continue
        preset = PRESETS[name]()
        fields, rows = dict(start), []
        for lever, keys in (("baseline", ()), *LEVERS):
            if keys and all(fields[key] == _get(preset, key) for key in keys):
                continue
            for key in keys:
                fields[key] = _get(preset, key)
            config = with_fields(preset, {k: v for k, v in fields.items() if k not in COMPILER})
            with console.status(f"{name}: {lever}"):
                row = measure(config, qp, pixels,
                              **{k: v for k, v in fields.items() if k in COMPILER})
            row["lever"], row["fields"] = lever, dict(fields)
            row["gain"] = round(rows[-1]["cycles"] / row["cycles"], 3) if rows else 1.0
            rows.append(row)
        report["ablation"][name] = rows

    side = Table(title="M3ViT-tiny, one frame (task 0): cycles from the schedule model")
    for column in ("design", "cycles", "fps @300 MHz*", "vs Edge-MoE", "MAC units",
                   "DSPs (est.)", "linear util.", "frame MAC util.", "DRAM read/frame"):
        side.add_column(column, justify="left" if column == "design" else "right")
    for anchor, (cycles, source) in ANCHORS.items():
        side.add_row(f"{anchor} ({source})", f"{cycles:,}", f"{ASSUMED_MHZ * 1e6 / cycles:,.0f}",
                     f"{ANCHORS['Edge-MoE'][0] / cycles:.1f}x", "", "", "", "", "")
    for name, p in report["presets"].items():
        side.add_row(name, f"{p['cycles']:,}", f"{p['fps_at_assumed_300mhz']:,.0f}",
                     f"{ANCHORS['Edge-MoE'][0] / p['cycles']:.1f}x", f"{p['mac_units']:,}",
                     f"{p['dsp_estimate']:,}", f"{p['linear_utilisation']:.1%}",
                     f"{p['frame_mac_utilisation']:.1%}", f"{p['dram_read_bytes'] / 1e6:.1f} MB")
    console.print(side)
    for name, rows in report["ablation"].items():
        table = Table(title=f"ablation at {name}: levers stacked in order")
        for column in ("lever", "fields", "cycles", "gain", "linear util.", "frame MAC util.",
                       "attention share", "DSPs (est.)"):
            table.add_column(column, justify="left" if column in ("lever", "fields") else "right")
        for row in rows:
            table.add_row(row["lever"], ", ".join(f"{k}={v}" for k, v in row["fields"].items()),
                          f"{row['cycles']:,}", f"{row['gain']:.2f}x",
                          f"{row['linear_utilisation']:.1%}", f"{row['frame_mac_utilisation']:.1%}",
                          f"{row['unit_share']['attention']:.1%}", f"{row['dsp_estimate']:,}")
        console.print(table)
    console.print("* an assumed clock: no vendor tool has timed the design.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
