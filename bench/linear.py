"""Linear-kernel benchmark: RTL cycles vs the cycle model and MAC utilisation on M3ViT shapes.

For each (PI, PO, T) point, runs the model's layer shapes (129 tokens; experts
with 16 tokens, about their average share of 258 routed slots, and 129) through the emitted
Verilog under cocotb + Verilator, every output checked bit-exactly, and prints
a table: cycles (RTL, model), utilisation alone (weights loaded first) and in
steady state (weights of the next matrix loaded while this one computes).
Writes ``build/bench/linear.json``.

Usage: ``python -m bench.linear [--points 16x16x3,8x16x4,32x8x2]``
"""

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

from rtl.compute.linear import LinearConfig, LinearKernel
from sim.runner import run_cocotb
from sim.waves import BUILD_DIR

#: (d_in, d_out, tokens): qkv, proj, fc1, fc2, gate, expert fc1/fc2 with 16 and 129 tokens.
SHAPES = [(192, 576, 129), (192, 192, 129), (192, 768, 129), (768, 192, 129), (192, 16, 129),
          (192, 384, 16), (384, 192, 16), (192, 384, 129), (384, 192, 129)]


def kernel_params(pi, po, t):
    kb_nb = max(-(-d_in // pi) * -(-d_out // po) for d_in, d_out, _ in SHAPES)
    return dict(pi=pi, po=po, t=t, max_in=768, max_out=768, max_weight_words=kb_nb,
                bus_width=256)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Linear-kernel cycles and utilisation.")
    parser.add_argument("--points", default="16x16x3,8x16x4,32x8x2",
                        help="comma-separated PIxPOxT points")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    out_dir = BUILD_DIR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for point in args.points.split(","):
        pi, po, t = (int(v) for v in point.split("x"))
        params = kernel_params(pi, po, t)
        report = out_dir / f"linear_{point}.json"
        start = time.monotonic()
        with console.status(f"PI={pi} PO={po} T={t}: Verilator build and simulation"):
            run_cocotb("linear", params, LinearKernel(LinearConfig(**params)), "sim.tb_linear",
                       testcase="model_shapes_cycles",
                       env={"TB_SHAPES": json.dumps(SHAPES), "TB_REPORT": str(report)})
        for row in json.loads(report.read_text()):
            d_in, d_out, tokens = row["shape"]
            macs = d_in * d_out * tokens
            lanes = pi * po * t
            steady = row["cycles_two"] - row["cycles"]
            results.append({
                "pi": pi, "po": po, "t": t, "shape": row["shape"], **row,
                "utilization": macs / (lanes * row["cycles"]),
                "steady_cycles": steady,
                "steady_utilization": macs / (lanes * steady),
                "wall_seconds": round(time.monotonic() - start, 1),
            })

    table = Table(title="Linear kernel: RTL cycles (bit-exact runs) vs model, utilisation")
    for column in ("PIxPOxT", "d_in->d_out x tokens", "cycles", "model", "util alone",
                   "steady cycles", "steady util"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(f"{r['pi']}x{r['po']}x{r['t']}",
                      f"{r['shape'][0]}->{r['shape'][1]} x {r['shape'][2]}",
                      f"{r['cycles']:,}", f"{r['model_cycles']:,}",
                      f"{100 * r['utilization']:.1f}%", f"{r['steady_cycles']:,}",
                      f"{100 * r['steady_utilization']:.1f}%")
    console.print(table)
    path = out_dir / "linear.json"
    path.write_text(json.dumps(results, indent=2))
    console.print(f"report: {path}")


if __name__ == "__main__":
    main()
