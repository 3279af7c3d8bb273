"""cocotb testbenches for the emitted Verilog of the softmax, LayerNorm and gating units.

One test per unit (run with ``testcase=``); parameters arrive as ``TB_*``
variables: softmax ``TB_ROW``, ``TB_LANES``, ``TB_MODE``; LayerNorm ``TB_D``,
``TB_LANES``; gating ``TB_EXPERTS``, ``TB_K``, ``TB_MAX_TOKENS``. Inputs are
M3ViT-sized and seeded (``TB_SEED``); expected values come from ``golden/``
through ``sim.nonlinear_images``; full-rate cycles are checked against each
unit's ``exp_cycles``.
"""

import os

import cocotb
import numpy as np

from golden.moe import dispatch, topk
from golden.softmax import softmax_u8
from rtl.compute import layernorm, softmax
from rtl.moe import gating
from sim.cocotb_stream import run_streams, start_clock_and_reset
from sim.nonlinear_images import (check_gating, check_layernorm, check_softmax, gating_streams,
                                  layernorm_batch, layernorm_streams, softmax_words)

SEED = int(os.environ.get("TB_SEED", "0"))


def _env(name):
    return int(os.environ[f"TB_{name}"])


@cocotb.test()
async def softmax_rows(dut):
    await start_clock_and_reset(dut)
    row, lanes, mode = _env("ROW"), _env("LANES"), os.environ["TB_MODE"]
    rng = np.random.default_rng(SEED)
    u = rng.integers(-2000, 2000, (12, row))
    u[0] = rng.integers(-32768, 32768, row)
    u[1] = 5                                          # all equal
    words = softmax_words(u, lanes)
    res = await run_streams(dut, {"i": words}, {"o": len(words)})
    check_softmax(res["o"][0], u, lanes, mode)
    assert res["o"][1][-1] - res["i"][0] + 1 == softmax.exp_cycles([row] * len(u), lanes, mode)
    # Mixed row lengths up to row_max, with gaps and backpressure.
    rows = [rng.integers(-3000, 3000, n) for n in (1, row, lanes + 1, row - 1, 2, row)]
    words = softmax_words(rows, lanes)
    res = await run_streams(dut, {"i": words}, {"o": len(words)}, i_flow=0.5, o_flow=0.6, seed=SEED)
    check_softmax(res["o"][0], rows, lanes, mode)


@cocotb.test()
async def layernorm_tokens(dut):
    await start_clock_and_reset(dut)
    d, lanes = _env("D"), _env("LANES")
    rng = np.random.default_rng(SEED)
    batches = [layernorm_batch(rng, 129, d, extremes=True), layernorm_batch(rng, 7, d)]
    p_words, i_words, count = layernorm_streams(batches, d, lanes)
    res = await run_streams(dut, {"p": p_words, "i": i_words}, {"o": count},
                            i_flow=0.7, o_flow=0.6, seed=SEED)
    check_layernorm(res["o"][0], batches, d, lanes)
    one = [layernorm_batch(rng, 9, d)]
    p_words, i_words, count = layernorm_streams(one, d, lanes)
    res = await run_streams(dut, {"p": p_words}, {})
    res = await run_streams(dut, {"i": i_words}, {"o": count})
    check_layernorm(res["o"][0], one, d, lanes)
    assert res["o"][1][-1] - res["i"][0] + 1 == layernorm.exp_cycles(d, lanes, 9)


@cocotb.test()
async def gating_frames(dut):
    await start_clock_and_reset(dut)
    experts, k, tokens = _env("EXPERTS"), _env("K"), _env("MAX_TOKENS")
    rng = np.random.default_rng(SEED)
    frames = [rng.integers(-400, 400, (tokens, experts)) for _ in range(2)]
    words, expected = gating_streams(frames, k)
    res = await run_streams(dut, {"i": words}, {"o": len(expected)}, i_flow=0.7, o_flow=0.6,
                            seed=SEED)
    check_gating(res["o"][0], expected, experts)
    words, expected = gating_streams(frames[:1], k)
    res = await run_streams(dut, {"i": words}, {"o": len(expected)})
    check_gating(res["o"][0], expected, experts)
    lengths = dispatch(topk(frames[0], k), softmax_u8(frames[0]), experts).lengths
    assert res["o"][1][-1] - res["i"][0] + 1 == gating.exp_cycles(experts, k, lengths)
