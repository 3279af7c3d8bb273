"""``make demo``: whole frames through the accelerator's RTL, bit-exact and cycle-exact.

1. M3ViT-tiny (seeded weights, min/max PTQ) is compiled for the ``zcu102`` preset
   and one frame per task runs through the RTL top in Verilator: the program is
   fetched from the simulated DRAM over AXI, the queues run the whole backbone
   (patch embedding, 12 blocks, 6 MoE layers driven by the routing table) and the
   output goes back to DRAM. Every frame is checked against the reference executor
   (which equals the integer model) bit for bit and against the schedule model
   cycle for cycle.
2. The trained ``mnist5k`` study model (dual-stage W8A8) classifies a handful of
   held-out MNIST images in RTL; the table shows the labels, the float model's
   prediction and the RTL's.

The frames run through the host runtime's simulator target
(``moevit.runtime.open_target("sim")``, the same calls as on a board). Verilator's
build and simulation logs go to ``build/demo/``; the figures to
``build/demo/report.json`` and the HTML report of the M3ViT-tiny frame (timeline,
utilisation, cycles per block, resources) to ``build/demo/report.html``. Frame rates
are at an **assumed** 300 MHz clock (no vendor tool has timed the design).

Usage: ``python -m examples.demo [--config zcu102] [--images 6]``
"""

import argparse
import json
import sys
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from golden.config import m3vit_tiny
from golden.datasets import dataset
from golden.float_model import classify, random_image
from golden.int_model import pixels_from_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.report import build_report, write_html
from moevit.runtime import open_target
from moevit.schedule import schedule
from rtl.config import PRESETS, preset
from sim.waves import BUILD_DIR

EDGE_MOE_FRAME = 5_300_000
COQMOE_FPS = 155
MHZ = 300


def _verified(compiled, runs, log_dir):
    """Run on the simulator target (:mod:`moevit.runtime`); per run (frame, schedule model,
    bit-exact and no error), and the wall time."""
    session = open_target("sim", compiled.config, log_dir=log_dir)
    session.load(compiled)
    start = time.perf_counter()
    frames = session.run([p for p, _ in runs], [t for _, t in runs])
    wall = time.perf_counter() - start
    out = []
    for (pixels, task), frame in zip(runs, frames):
        expected, run = execute(compiled, pixels, task)
        model = schedule(compiled.config, run)
        exact = bool(np.array_equal(frame.output, expected)) and frame.error == "none"
        out.append((frame, model, exact))
    return out, wall


def _board(config):
    """The board of a preset, for the report's resource budget (None for ecp5_85f)."""
    return config if config in ("zcu102", "u280") else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="zcu102", choices=sorted(PRESETS))
    parser.add_argument("--images", type=int, default=6, help="MNIST images to classify")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    out_dir = BUILD_DIR / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"config": args.config, "clock_mhz_assumed": MHZ}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        step = progress.add_task("M3ViT-tiny: seeded weights, min/max PTQ, compile", total=None)
        cfg = m3vit_tiny()
        images = [random_image(cfg, seed=n) for n in range(3)]
        qp = calibrate(cfg, init_weights(cfg, seed=2), images[:2])
        pixels = pixels_from_image(cfg, images[2])
        config = preset(args.config)
        compiled = compile_model(qp, config)
        progress.update(step, description=f"M3ViT-tiny: Verilator build and a frame per task "
                                          f"on the {args.config} top (logs: build/demo/m3vit)")
        frames, wall = _verified(compiled, [(pixels, t) for t in range(cfg.num_tasks)],
                                 out_dir / "m3vit")
        progress.update(step, description="mnist5k: dual-stage PTQ, compile, classify in RTL "
                                          "(logs: build/demo/mnist5k)")
        data = dataset("mnist5k")
        mcfg = data.config()
        calib, _ = data.load_split("calibration")
        mqp = calibrate(mcfg, data.load_weights(),
                        calib[:-(-MIN_SAMPLES_PER_CHANNEL // mcfg.num_tokens)], method="dual_stage")
        test, labels = data.load_split("test")
        test, labels = test[:args.images], labels[:args.images]
        mnist = compile_model(mqp, preset(args.config).fitted(mcfg))
        digits, mnist_wall = _verified(mnist, [(pixels_from_image(mcfg, im), 0) for im in test],
                                       out_dir / "mnist5k")
        weights = data.load_weights()
        floats = [int(np.argmax(classify(mcfg, weights, im))) for im in test]
        progress.update(step, description="done", completed=1, total=1)

    table = Table(title=f"M3ViT-tiny, one frame per task through the RTL ({args.config} preset)")
    for column in ("task", "bit-exact", "cycles RTL", "cycles model", "frames/s @300 MHz*",
                   "vs Edge-MoE", "vs CoQMoE", "MAC util.", "sim cycles/s"):
        table.add_column(column, justify="right")
    report["m3vit_tiny"] = {}
    for task, (result, model, exact) in enumerate(frames):
        fps = MHZ * 1e6 / result.cycles
        mac = model.macs / config.linear.macs / result.cycles
        rate = result.cycles / result.wall_s
        table.add_row(str(task), "yes" if exact else "NO", f"{result.cycles:,}",
                      f"{model.cycles:,}", f"{fps:,.0f}", f"{EDGE_MOE_FRAME / result.cycles:.1f}x",
                      f"{fps / COQMOE_FPS:.2f}x", f"{mac:.1%}", f"{rate:,.0f}")
        report["m3vit_tiny"][str(task)] = {
            "bit_exact": exact, "cycles": result.cycles, "model_cycles": model.cycles,
            "fps_at_300mhz": round(fps, 1), "mac_utilization": round(mac, 4),
            "unit_busy": result.busy, "sim_cycles_per_s": round(rate)}
    console.print(table)
    result = frames[0][0]
    busy = Table(title="busy share of the frame per engine (task 0, counted in the RTL)")
    names = list(result.busy)
    for name in names:
        busy.add_column(name, justify="right")
    busy.add_row(*(f"{result.busy[n] / result.cycles:.0%}" for n in names))
    console.print(busy)
    digits_table = Table(title=f"mnist5k (dual-stage W8A8) in RTL, {args.images} test images")
    for column in ("image", "label", "float model", "RTL", "bit-exact", "cycles", "model"):
        digits_table.add_column(column, justify="right")
    report["mnist5k"] = []
    for k, ((result, model, exact), label, flt) in enumerate(zip(digits, labels, floats)):
        predicted = int(np.argmax(result.output))
        digits_table.add_row(str(k), str(label), str(flt), str(predicted), "yes" if exact else "NO",
                             f"{result.cycles:,}", f"{model.cycles:,}")
        report["mnist5k"].append({"label": int(label), "float": flt, "rtl": predicted,
                                  "bit_exact": exact, "cycles": result.cycles,
                                  "model_cycles": model.cycles})
    console.print(digits_table)
    console.print(f"* an assumed clock (no vendor tool has timed the design). Edge-MoE needs "
                  f"~5.3 M cycles per frame for compute alone; CoQMoE reports ~{COQMOE_FPS} "
                  f"frames/s. Simulation: {wall + mnist_wall:.0f} s of "
                  f"{time.perf_counter() - start:.0f} s.")
    ok = all(e for _, _, e in frames + digits) and all(
        r.cycles == m.cycles for r, m, _ in frames + digits)
    report["all_exact"] = ok
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    page = write_html(build_report(compiled, pixels, 0, board=_board(args.config),
                                   rtl={"cycles": frames[0][0].cycles,
                                        "busy": frames[0][0].busy}), out_dir / "report.html")
    console.print(f"wrote {out_dir / 'report.json'} and {page} (timeline, utilisation, cycles "
                  f"per block, resources)")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
