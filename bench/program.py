"""The accelerator program of M3ViT-tiny at every preset: bit-exactness and predicted cycles.

Builds M3ViT-tiny with seeded random weights (``golden.weights.init_weights``),
quantizes it by CoQMoE's dual-stage PTQ on seeded images, compiles it for each
accelerator preset (``rtl.config.PRESETS``), runs the reference executor for
both tasks on a held-out image and checks it against ``golden.int_model.int_forward``
bit for bit, and gives the schedule model's cycles per frame: overlapped (the
three queues and the units' double buffers as the hardware runs them) and
serial (every instruction after the previous one), each unit's busy cycles, and
the DRAM traffic (with resident weights, of a warm frame; the first frame after
a program load fills the store). Frames per second are at an **assumed** 300 MHz clock (no
vendor tool has timed the design). Edge-MoE needs about 5.3 M cycles per frame
for compute alone; CoQMoE reports about 155 frames/s.

Usage: ``python -m bench.program [--preset zcu102 ...] [--config my.json] [--seed 0]``
Writes ``build/program/report.json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.config import m3vit_tiny
from golden.float_model import random_image
from golden.int_model import int_forward, pixels_from_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.schedule import ENGINES, schedule
from rtl.config import PRESETS, AcceleratorConfig
from sim.waves import BUILD_DIR

EDGE_MOE_FRAME = 5_300_000
ASSUMED_MHZ = 300


def quantized_model(seed):
    """M3ViT-tiny, seeded weights, dual-stage W8A8 (log2 attention), and a held-out image."""
    cfg = m3vit_tiny()
    calib = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)
    images = [random_image(cfg, seed=seed + 1 + n) for n in range(calib + 1)]
    qp = calibrate(cfg, init_weights(cfg, seed=seed), images[:-1], method="dual_stage")
    return qp, pixels_from_image(cfg, images[-1])


def evaluate(config, qp, pixels):
    """Compile, execute both tasks, schedule: the report entry of one config."""
    start = time.perf_counter()
    compiled = compile_model(qp, config)
    entry = {"config": config.to_dict(), "instructions": len(compiled.program),
             "weight_bytes": compiled.weight_bytes,
             "program_words": compiled.program.words, "dram_bytes": len(compiled.image.data),
             "tasks": {}}
    for task in range(qp.config.num_tasks):
        out, run = execute(compiled, pixels, task)
        sched = schedule(config, run)
        cold = schedule(config, run, warm=False) if config.resident else sched
        entry["tasks"][str(task)] = {
            "bit_exact": bool(np.array_equal(out, int_forward(qp, pixels, task))),
            "executed_instructions": len(run.steps),
            "active_experts": [len(s.info["lengths"]) - s.info["lengths"].count(0)
                               for s in run.steps if "lengths" in s.info],
            **sched.to_dict(),
            "linear_utilisation": round(sched.macs / config.linear.macs / sched.cycles, 4),
            "first_frame_cycles": cold.cycles,
            "first_frame_dram_read_bytes": cold.dram_read_bytes,
        }
    first = entry["tasks"]["0"]
    entry.update(predicted_cycles=first["cycles"], serial_cycles=first["serial_cycles"],
                 unit_busy=first["unit_busy"], dram_read_bytes=first["dram_read_bytes"],
                 fps_at_assumed_300mhz=round(ASSUMED_MHZ * 1e6 / first["cycles"], 1),
                 vs_edge_moe=round(EDGE_MOE_FRAME / first["cycles"], 2),
                 seconds=round(time.perf_counter() - start, 2))
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description="M3ViT-tiny program: bit-exactness and cycles "
                                                 "per accelerator preset.")
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS),
                        help="presets to evaluate (default: all)")
    parser.add_argument("--config", action="append", type=Path, default=[],
                        help="an AcceleratorConfig JSON file to evaluate as well")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BUILD_DIR / "program" / "report.json")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    configs = [PRESETS[name]() for name in (args.preset or PRESETS)]
    for path in args.config:
        try:
            configs.append(AcceleratorConfig.load(path))
        except ValueError as e:           # (the message names the file)
            console.print(str(e))
            raise SystemExit(2) from None
    with console.status("M3ViT-tiny: seeded weights, dual-stage PTQ"):
        qp, pixels = quantized_model(args.seed)
    report = {"model": qp.config.name, "quantization": "dual_stage W8A8, log2 attention",
              "seed": args.seed, "clock_mhz_assumed": ASSUMED_MHZ, "presets": {}, "tasks": {}}
    for config in configs:
        with console.status(f"{config.name}: compile, execute both tasks, schedule"):
            report["presets"][config.name] = evaluate(config, qp, pixels)
    for task in range(qp.config.num_tasks):
        report["tasks"][str(task)] = {"bit_exact": all(
            p["tasks"][str(task)]["bit_exact"] for p in report["presets"].values())}

    table = Table(title="M3ViT-tiny frame (task 0) on the accelerator program")
    for column in ("preset", "instructions", "image MB", "read MB/frame", "cycles", "serial",
                   "overlap", "fps @300 MHz*", "linear util.", "bit-exact"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    busy = Table(title="busy share of the frame per engine (task 0; they overlap)")
    for column in ("preset", *ENGINES):
        busy.add_column(column, justify="left" if column == "preset" else "right")
    for name, p in report["presets"].items():
        t0 = p["tasks"]["0"]
        table.add_row(name, str(p["instructions"]), f"{p['dram_bytes'] / 1e6:.1f}",
                      f"{p['dram_read_bytes'] / 1e6:.2f}", f"{p['predicted_cycles']:,}",
                      f"{p['serial_cycles']:,}",
                      f"{p['serial_cycles'] / p['predicted_cycles']:.2f}x",
                      f"{p['fps_at_assumed_300mhz']:,.0f}", f"{t0['linear_utilisation']:.1%}",
                      "yes" if all(t["bit_exact"] for t in p["tasks"].values()) else "NO")
        busy.add_row(name, *(f"{t0['unit_share'][u]:.1%}" for u in ENGINES))
    console.print(table)
    console.print(busy)
    console.print("* an assumed clock: no vendor tool has timed the design. Edge-MoE: ~5.3 M "
                  "cycles per frame (compute only); CoQMoE: ~155 frames/s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    if not all(t["bit_exact"] for t in report["tasks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
