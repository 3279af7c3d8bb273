"""One M3ViT frame per task through the RTL top in Verilator, against both models.

Builds M3ViT-tiny (or ``--model m3vit_small``) with seeded weights (``golden.weights.init_weights``, min/max
PTQ: the same quantized model as ``tests/test_sim_top.py``), compiles it for an
accelerator preset fitted to the model (:meth:`rtl.config.AcceleratorConfig.fitted`), and runs one frame per task on the RTL top with the
simulation DRAM (:func:`sim.frame.run_verilator`). Each frame is checked against
the reference executor (bit for bit) and the schedule model (cycles); the report
gives the measured cycles, the busy cycles of every engine, the linear kernel's
MAC utilisation, frames per second at an **assumed** 300 MHz (no vendor tool has
timed the design) next to Edge-MoE (~5.3 M cycles, compute only) and CoQMoE (~155
frames/s), and the simulator's speed.

Usage: ``python -m bench.frame [--config zcu102 | --config FILE.json] [--attention mant4]
[--model m3vit_small]``; writes ``build/frame/<config name>/report.json``. The model is
quantized with the attention form and the top built for it: a config built for another
form is renamed ``<config name>_<form>``; a config not sized for the model is fitted to it
(:meth:`rtl.config.AcceleratorConfig.fitted`) and renamed ``<config name>_<model>``.
"""

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.config import PRESETS as MODELS
from golden.float_model import random_image
from golden.int_model import pixels_from_image
from golden.ptq import calibrate
from golden.softmax import ATTENTION_CODES
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.schedule import schedule
from rtl.config import PRESETS, AcceleratorConfig, preset
from sim.frame import run_verilator
from sim.waves import BUILD_DIR

EDGE_MOE_FRAME = 5_300_000
COQMOE_FPS = 155
ASSUMED_MHZ = 300


def main(argv=None):
    parser = argparse.ArgumentParser(description="M3ViT frames through the RTL top.")
    parser.add_argument("--config", default="zcu102",
                        help=f"a preset ({', '.join(PRESETS)}) or a config JSON file "
                             f"(e.g. build/dse/u280.config.json of make dse)")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--attention", default="log2", choices=ATTENTION_CODES,
                        help="attention code form of the model and the top (default log2)")
    parser.add_argument("--model", default="m3vit_tiny", choices=("m3vit_tiny", "m3vit_small"),
                        help="the model (default m3vit_tiny)")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    cfg = MODELS[args.model]()
    with console.status(f"{cfg.name}: seeded weights, min/max PTQ, compile"):
        images = [random_image(cfg, seed=n) for n in range(3)]
        qp = calibrate(cfg, init_weights(cfg, seed=args.seed), images[:2],
                       attention=args.attention)
        pixels = pixels_from_image(cfg, images[2])
        config = (AcceleratorConfig.load(args.config)
                  if args.config.endswith(".json") else preset(args.config))
        if config.attention.codes != (args.attention,):
            config = dataclasses.replace(
                config, name=f"{config.name}_{args.attention}",
                attention=dataclasses.replace(config.attention, codes=(args.attention,)))
        if config.fitted(cfg) != config:
            config = dataclasses.replace(config.fitted(cfg), name=f"{config.name}_{cfg.name}")
        compiled = compile_model(qp, config)
    runs = [(pixels, task) for task in range(cfg.num_tasks)]
    start = time.perf_counter()
    with console.status(f"{config.name}: Verilator build and {len(runs)} frames (logs under "
                        f"build/sim/frame/)"):
        results, sim_wall = run_verilator(compiled, runs)
    report = {"config": config.to_dict(), "model": cfg.name, "tasks": {},
              "clock_mhz_assumed": ASSUMED_MHZ}
    table = Table(title=f"{cfg.name} on the {config.name} top (Verilator)")
    for column in ("task", "bit-exact", "cycles (RTL)", "cycles (model)", "fps @300 MHz*",
                   "vs Edge-MoE", "vs CoQMoE", "MAC util.", "sim cycles/s"):
        table.add_column(column, justify="right")
    for (px, task), result in zip(runs, results):
        expected, run = execute(compiled, px, task)
        model = schedule(config, run)
        fps = ASSUMED_MHZ * 1e6 / result.cycles
        entry = {"bit_exact": bool(np.array_equal(result.output, expected) and not result.error),
                 "cycles": result.cycles, "model_cycles": model.cycles, "error": result.error,
                 "unit_busy": {k: v for k, v in result.busy.items() if k != "wall_s"},
                 "mac_utilization": round(model.macs / config.linear.macs / result.cycles, 4),
                 "fps_at_300mhz": round(fps, 1),
                 "sim_cycles_per_s": round(result.cycles / result.busy["wall_s"])}
        report["tasks"][str(task)] = entry
        table.add_row(str(task), "yes" if entry["bit_exact"] else "NO", f"{result.cycles:,}",
                      f"{model.cycles:,}", f"{fps:,.0f}", f"{EDGE_MOE_FRAME / result.cycles:.1f}x",
                      f"{fps / COQMOE_FPS:.2f}x", f"{entry['mac_utilization']:.1%}",
                      f"{entry['sim_cycles_per_s']:,}")
    first = report["tasks"]["0"]
    report.update(fps_at_300mhz=first["fps_at_300mhz"], mac_utilization=first["mac_utilization"],
                  unit_busy=first["unit_busy"], sim_cycles_per_s=first["sim_cycles_per_s"],
                  wall_s=round(time.perf_counter() - start, 1), simulation_s=round(sim_wall, 1))
    console.print(table)
    busy = Table(title="busy cycles per engine (task 0)")
    for name in first["unit_busy"]:
        busy.add_column(name, justify="right")
    busy.add_row(*(f"{v:,} ({v / first['cycles']:.0%})" for v in first["unit_busy"].values()))
    console.print(busy)
    console.print("* an assumed clock: no vendor tool has timed the design.")
    out = BUILD_DIR / "frame" / config.name / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out} ({report['wall_s']} s, Verilator build included)")
    if not all(t["bit_exact"] and t["cycles"] == t["model_cycles"]
               for t in report["tasks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
