"""cocotb testbench for the emitted Verilog of :class:`rtl.compute.systolic.SystolicArray`.

Parameters arrive as ``TB_ROWS``, ``TB_COLS``, ``TB_K_LANES``, ``TB_OPERAND_WIDTH``,
``TB_ROW_BROADCAST``
(set by :func:`sim.runner.run_cocotb`) and ``TB_SEED``. Expected values come from
``golden.gemm.int8_matmul``; cycle counts from ``rtl.compute.systolic.exp_cycles``.
"""

import json
import os

import cocotb
import numpy as np

from golden.gemm import K_MAX, int8_matmul
from rtl.compute.systolic import exp_cycles
from sim.cocotb_stream import run_streams, start_clock_and_reset
from sim.gemm_tiles import gemm_result, gemm_words

ROWS = int(os.environ.get("TB_ROWS", "4"))
COLS = int(os.environ.get("TB_COLS", "4"))
K_LANES = int(os.environ.get("TB_K_LANES", "1"))
WIDTH = int(os.environ.get("TB_OPERAND_WIDTH", "8"))
BROADCAST = os.environ.get("TB_ROW_BROADCAST", "False") == "True"
SEED = int(os.environ.get("TB_SEED", "0"))
LO, HI = -(1 << (WIDTH - 1)), (1 << (WIDTH - 1)) - 1


async def run_gemm(dut, a, b, i_flow=1.0, o_flow=1.0, seed=SEED, progress=None):
    """Multiply on the DUT; return (result, cycles from first input to last output)."""
    words, out_count = gemm_words(a, b, ROWS, COLS, K_LANES, WIDTH)
    res = await run_streams(dut, {"i": words}, {"o": out_count}, i_flow=i_flow, o_flow=o_flow,
                            seed=seed, progress=progress and (lambda _, n, total: progress(n, total)))
    (out, out_cycles), in_cycles = res["o"], res["i"]
    result = gemm_result(out, a.shape[0], b.shape[1], ROWS, COLS)
    return result, out_cycles[-1] - in_cycles[0] + 1


def check(result, a, b, what):
    expected = int8_matmul(a, b)
    if not np.array_equal(result, expected):
        bad = np.argwhere(result != expected)[0]
        raise AssertionError(f"{what}: first mismatch at {tuple(bad)}: "
                             f"got {result[tuple(bad)]}, expected {expected[tuple(bad)]}")


@cocotb.test()
async def random_shapes_with_gaps_and_backpressure(dut):
    await start_clock_and_reset(dut)
    rng = np.random.default_rng(SEED)
    for trial in range(6):
        m, k, n = (int(x) for x in rng.integers(1, 3 * max(ROWS, COLS) + 2, 3))
        a = rng.integers(LO, HI + 1, (m, k))
        b = rng.integers(LO, HI + 1, (k, n))
        i_flow, o_flow = [(1.0, 1.0), (0.5, 1.0), (1.0, 0.3), (0.7, 0.6)][trial % 4]
        result, _ = await run_gemm(dut, a, b, i_flow, o_flow, seed=SEED + trial)
        check(result, a, b, f"trial {trial} ({m}x{k}x{n}, flow {i_flow}/{o_flow})")


@cocotb.test()
async def k1_and_mixed_sign_extremes(dut):
    await start_clock_and_reset(dut)
    m, n = ROWS + 1, COLS + 1
    for k in (1, 2 * K_LANES + 1):
        for x, y in ((LO, LO), (LO, HI), (HI, LO), (HI, HI), (0, LO), (LO, 0)):
            a, b = np.full((m, k), x), np.full((k, n), y)
            result, _ = await run_gemm(dut, a, b, 0.8, 0.8)
            check(result, a, b, f"K={k}, a={x}, b={y}")


@cocotb.test()
async def full_rate_cycles_match_model(dut):
    await start_clock_and_reset(dut)
    rng = np.random.default_rng(SEED + 100)
    for m, k, n in ((2 * ROWS, 4 * K_LANES * max(ROWS, COLS), 3 * COLS), (ROWS, 1, COLS),
                    (3 * ROWS - 1, 2, 2 * COLS + 1)):
        a = rng.integers(LO, HI + 1, (m, k))
        b = rng.integers(LO, HI + 1, (k, n))
        result, cycles = await run_gemm(dut, a, b)
        check(result, a, b, f"{m}x{k}x{n}")
        expected = exp_cycles(m, k, n, rows=ROWS, cols=COLS, k_lanes=K_LANES,
                                   row_broadcast=BROADCAST)
        assert cycles == expected, f"{m}x{k}x{n}: {cycles} cycles, model {expected}"


@cocotb.test(skip=os.environ.get("TB_LONG_K", "0") == "0")
async def longest_k_extreme_products(dut):
    """(-128) * (-128) summed over K_MAX terms reaches 2**31 - 2**14 without wrapping."""
    await start_clock_and_reset(dut)
    k = K_MAX
    a = np.full((1, k), LO)
    b = np.full((k, 1), LO)
    result, _ = await run_gemm(dut, a, b)
    check(result, a, b, f"K={k}, all {LO} * {LO}")
    a[0, ::2] = HI
    result, _ = await run_gemm(dut, a, b)
    check(result, a, b, f"K={k}, alternating {HI}/{LO} * {LO}")


@cocotb.test(skip="TB_WORKLOAD" not in os.environ)
async def gemm_workload(dut):
    """One ``M x K x N`` matmul at full rate (``TB_WORKLOAD="M,K,N"``), report to ``TB_REPORT``."""
    m, k, n = (int(x) for x in os.environ["TB_WORKLOAD"].split(","))
    await start_clock_and_reset(dut)
    rng = np.random.default_rng(SEED)
    a = rng.integers(LO, HI + 1, (m, k))
    b = rng.integers(LO, HI + 1, (k, n))
    step = max(1, ROWS * -(-m // ROWS) * -(-n // COLS) // 10)

    def progress(done, total):
        if done % step == 0 or done == total:
            dut._log.info("result rows %d / %d (%.0f%%)", done, total, 100 * done / total)

    result, cycles = await run_gemm(dut, a, b, progress=progress)
    check(result, a, b, f"workload {m}x{k}x{n}")
    report = {
        "shape": {"m": m, "k": k, "n": n}, "seed": SEED,
        "array": {"rows": ROWS, "cols": COLS, "k_lanes": K_LANES, "operand_width": WIDTH,
                  "row_broadcast": BROADCAST},
        "macs": m * k * n, "cycles": cycles,
        "model_cycles": exp_cycles(m, k, n, rows=ROWS, cols=COLS, k_lanes=K_LANES,
                                   row_broadcast=BROADCAST),
        "bit_exact": True,
    }
    with open(os.environ["TB_REPORT"], "w") as f:
        json.dump(report, f, indent=2)
