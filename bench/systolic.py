"""Systolic-array benchmark: a transformer-sized int8 matmul on the bare array, in RTL simulation.

Elaborates :class:`rtl.compute.systolic.SystolicArray` to Verilog, runs ``tokens x d_in``
times ``d_in x d_out`` (default 129 x 192 x 192, one M3ViT-tiny projection)
through the emitted Verilog under cocotb, checks every output bit-exactly
against ``golden.gemm.int8_matmul`` and prints cycles, MACs per cycle and
utilisation. Writes ``build/bench/systolic.json``.

Usage: ``python -m bench.systolic [--rows 8 --cols 8 --shape 129,192,192]``
"""

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from rtl.compute.systolic import SystolicArray
from sim.runner import run_cocotb
from sim.waves import BUILD_DIR


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--k-lanes", type=int, default=1)
    parser.add_argument("--shape", default="129,192,192", help="M,K,N (tokens, d_in, d_out)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    console = Console()

    params = dict(rows=args.rows, cols=args.cols, k_lanes=args.k_lanes, operand_width=8,
                  row_broadcast=False)
    array = SystolicArray(args.rows, args.cols, k_lanes=args.k_lanes)
    out_dir = BUILD_DIR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "systolic.json"
    m, k, n = (int(x) for x in args.shape.split(","))
    console.print(f"[bold]Systolic int8 array {args.rows}x{args.cols} (k_lanes {args.k_lanes})[/]: "
                  f"{m}x{k} @ {k}x{n} under cocotb, checked against golden.gemm.int8_matmul")
    start = time.monotonic()
    with console.status("elaborating, compiling with Verilator (first run ~30 s) and simulating"):
        run_cocotb("systolic", params, array, "sim.tb_systolic", testcase="gemm_workload",
                   env={"TB_WORKLOAD": f"{m},{k},{n}", "TB_REPORT": str(report_path),
                        "TB_SEED": str(args.seed)})
    wall = time.monotonic() - start
    report = json.loads(report_path.read_text())
    lanes = args.rows * args.cols * args.k_lanes
    ideal = -(-report["macs"] // lanes)
    report.update(wall_seconds=round(wall, 2), macs_per_cycle=report["macs"] / report["cycles"],
                  utilization=report["macs"] / (lanes * report["cycles"]), ideal_cycles=ideal)
    report_path.write_text(json.dumps(report, indent=2))

    table = Table(title="Result (bit-exact against the golden model)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("MACs", f"{report['macs']:,}")
    table.add_row("cycles (RTL)", f"{report['cycles']:,}")
    table.add_row("cycles (model, rtl.compute.systolic.exp_cycles)", f"{report['model_cycles']:,}")
    table.add_row(f"ideal cycles (MACs / {lanes} PEs)", f"{ideal:,}")
    table.add_row("MACs per cycle", f"{report['macs_per_cycle']:.1f} of {lanes}")
    table.add_row("utilization", f"{100 * report['utilization']:.1f}%")
    table.add_row("wall time", f"{wall:.1f} s")
    console.print(table)
    vdir = BUILD_DIR / "sim" / "systolic"
    console.print(f"Verilog and simulator build: {vdir}/...; report: {report_path}")
    if report["cycles"] != report["model_cycles"]:
        raise SystemExit("RTL cycles differ from the cycle model")


if __name__ == "__main__":
    main()
