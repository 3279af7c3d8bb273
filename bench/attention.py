"""Attention-kernel benchmark: cycles for one M3ViT-tiny attention layer (3 heads x 129 tokens x 64).

For each (R, Dp, H) point, runs the layer through the emitted Verilog under
cocotb + Verilator (outputs checked bit-exactly against ``golden.softmax``),
and prints measured cycles, the model (``rtl.compute.attention.exp_cycles``), the MACs
of the QK^T array, and the speed-up over Edge-MoE's ~204k cycles for QK^T + P.V
of the same layer (anchors: 102,168 cycles each). Writes ``build/bench/attention.json``.

Usage: ``python -m bench.attention [--points 8x8x1,8x16x3,16x16x3]``
"""

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from rtl.compute.attention import AttentionConfig, AttentionKernel
from sim.runner import run_cocotb
from sim.waves import BUILD_DIR

EDGE_MOE_CYCLES = 2 * 102_168


def main(argv=None):
    parser = argparse.ArgumentParser(description="Attention-kernel cycles on M3ViT-tiny.")
    parser.add_argument("--points", default="8x8x1,8x16x3,16x16x3", help="comma-separated RxDpxH")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    out_dir = BUILD_DIR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for point in args.points.split(","):
        r, dp, h = (int(x) for x in point.split("x"))
        params = dict(r=r, dp=dp, h=h, head_dim=64, max_tokens=129)
        report = out_dir / f"attention_{point}.json"
        start = time.monotonic()
        with console.status(f"R={r} Dp={dp} H={h}: Verilator build and simulation"):
            run_cocotb("attention", params, AttentionKernel(AttentionConfig(**params)),
                       "sim.tb_attention", env={"TB_HEADS": "3", "TB_TOKENS": "129", "TB_GAPS": "0",
                                                "TB_REPORT": str(report)})
        measured = json.loads(report.read_text())
        rows.append({"r": r, "dp": dp, "h": h, "macs": r * dp * h, **measured,
                     "vs_edge_moe": round(EDGE_MOE_CYCLES / measured["cycles"], 2),
                     "wall_s": round(time.monotonic() - start, 1)})
    table = Table(title="one M3ViT-tiny attention layer (QK^T + softmax + P.V, 3 heads, N = 129)")
    for col in ("R", "Dp", "H", "QK MACs", "RTL cycles", "model", "Edge-MoE / RTL"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(str(row["r"]), str(row["dp"]), str(row["h"]), str(row["macs"]),
                      f"{row['cycles']:,}", f"{row['model']:,}", f"{row['vs_edge_moe']}x")
    console.print(table)
    (out_dir / "attention.json").write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {out_dir / 'attention.json'}")


if __name__ == "__main__":
    main()
