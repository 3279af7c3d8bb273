"""cocotb testbench for the emitted Verilog of :class:`rtl.routing.Router` (TopK -> Dispatcher).

Parameters arrive as ``TB_EXPERTS``, ``TB_K``, ``TB_MAX_TOKENS`` and ``TB_LANES``;
``TB_SEED`` seeds the logits. Two frames of ``TB_MAX_TOKENS`` tokens stand for a
task switch (the two tasks' gate matrices route the same tokens differently).
Expected beats come from ``golden.moe`` through :mod:`sim.routing_images`, the
full-rate cycle count from :func:`rtl.routing.exp_cycles`.
"""

import os

import cocotb
import numpy as np

from rtl.dispatch import experts_layout, tokens_layout
from rtl.routing import exp_cycles
from sim.cocotb_stream import run_streams, start_clock_and_reset
from sim.routing_images import check_beats, dispatch_beats, routes, topk_words

SEED = int(os.environ.get("TB_SEED", "0"))


def _env(name):
    return int(os.environ[f"TB_{name}"])


async def _run(dut, frames, k, lanes, max_tokens, **flow):
    experts = frames[0].shape[1]
    want_experts, want_tokens = dispatch_beats(frames, k)
    res = await run_streams(dut, {"i": topk_words(frames, lanes)},
                            {"o_experts": len(want_experts), "o_tokens": len(want_tokens)},
                            **flow)
    check_beats("o_experts", experts_layout(experts, max_tokens), res["o_experts"][0],
                want_experts)
    check_beats("o_tokens", tokens_layout(experts), res["o_tokens"][0], want_tokens)
    return res


@cocotb.test()
async def task_switch_frames(dut):
    await start_clock_and_reset(dut)
    experts, k, tokens, lanes = _env("EXPERTS"), _env("K"), _env("MAX_TOKENS"), _env("LANES")
    rng = np.random.default_rng(SEED)
    # Logits of one frame under two gates: u = h @ W_t at the log2-domain scale.
    h = rng.normal(0, 1, (tokens, 64))
    frames = [np.clip(np.rint(h @ rng.normal(0, 40, (64, experts))), -32768, 32767).astype(int)
              for _ in range(2)]
    assert routes(frames[0], k).lengths != routes(frames[1], k).lengths
    await _run(dut, frames, k, lanes, tokens, i_flow=0.7, o_flow=0.6, seed=SEED)
    res = await _run(dut, frames, k, lanes, tokens)
    assert res["o_tokens"][1][-1] + 1 == exp_cycles(experts, k, lanes, [tokens, tokens])
