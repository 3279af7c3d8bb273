"""The whole gating datapath (gate GEMV, softmax, TopK, Dispatcher) against golden.

Logits are golden.quant's linear op of each task's gate matrix; choices, scores
and queues are golden.moe.topk / golden.softmax.softmax_u8 / golden.moe.dispatch.
"""

import numpy as np
import pytest

from rtl.dispatch import experts_layout, tokens_layout
from rtl.gating_path import GatingPath, exp_cycles
from rtl.linear import LinearConfig
from sim.pysim_stream import run_streams
from sim.routing_images import (check_beats, dispatch_beats, gate_tasks, gating_streams,
                                routes)

D_IN = 16


def run_path(pi, po, t, experts, k, schedule, *, i_flow=1.0, o_flow=1.0, seed=0):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=D_IN, max_out=max(experts, po),
                          bus_width=64)
    rng = np.random.default_rng(experts + k + po)
    max_tokens = max(n for _, n in schedule)
    x = rng.integers(-128, 128, (max_tokens, D_IN))
    w_words, x_words, frames = gating_streams(config, gate_tasks(rng, experts, D_IN), x,
                                              schedule)
    want_experts, want_tokens = dispatch_beats(frames, k)
    res = run_streams(GatingPath(config, experts, k, max_tokens), {"w": w_words, "x": x_words},
                      {"o_experts": len(want_experts), "o_tokens": len(want_tokens)},
                      name=f"gating_path_{experts}_{k}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_beats("o_experts", experts_layout(experts, max_tokens), res["o_experts"][0],
                want_experts)
    check_beats("o_tokens", tokens_layout(experts), res["o_tokens"][0], want_tokens)
    return res, config, frames


@pytest.mark.parametrize("pi, po, t, experts, k", [
    (4, 16, 2, 16, 2),          # one beat per token (E = PO), token groups of 2
    (4, 16, 1, 64, 4),          # four folds per token (E = 4 PO)
    (8, 4, 1, 4, 1),            # E = PO = 4, top-1
])
def test_task_switch_bit_exact_with_gaps_and_backpressure(pi, po, t, experts, k):
    # Task 0, task 1 on the same tokens, task 0 again on fewer: three gate images.
    schedule = [(0, 10), (1, 10), (0, 3)]
    _, _, frames = run_path(pi, po, t, experts, k, schedule, i_flow=0.6, o_flow=0.5, seed=k)
    assert routes(frames[0], k).lengths != routes(frames[1], k).lengths


@pytest.mark.parametrize("pi, po, t, experts, k, schedule", [
    (4, 16, 2, 16, 2, [(0, 12), (1, 12)]),
    (4, 16, 1, 64, 4, [(0, 6), (1, 6)]),
    (4, 4, 1, 16, 3, [(1, 12)]),
])
def test_cycles_within_3_percent_of_the_composed_model(pi, po, t, experts, k, schedule):
    res, config, _ = run_path(pi, po, t, experts, k, schedule)
    measured = res["o_tokens"][1][-1] + 1
    model = exp_cycles(config, experts, k, D_IN, [n for _, n in schedule])
    assert model <= measured <= model * 1.03


@pytest.mark.parametrize("kwargs, args, message", [
    (dict(out_width=32), (16, 2, 129),
     r"config.out_width must be 16 \(int16 gate logits\), not 32"),
    (dict(t=2), (64, 4, 129), r"experts \(64\) above config.po \(16\) must be a multiple of it "
                              r"with config.t = 1, not t = 2"),
    (dict(t=1), (24, 2, 129), r"experts \(24\) above config.po \(16\) must be a multiple"),
    (dict(po=32), (32, 2, 129), r"lanes must be an integer in \[1, 16\], not 32"),
    (dict(), (16, 5, 129), r"k must be an integer in \[1, 4\], not 5"),
    (dict(), (16, 2, 0), r"max_tokens must be an integer in \[1, 4096\], not 0"),
])
def test_bad_parameters_are_named(kwargs, args, message):
    config = LinearConfig(**(dict(pi=4, po=16, t=1, max_in=16, max_out=64) | kwargs))
    with pytest.raises(ValueError, match=message):
        GatingPath(config, *args)
