"""Dispatcher (and the TopK -> Dispatcher router) against golden.moe.dispatch.

Inputs are the golden top-k beats (golden.moe.topk, golden.softmax.softmax_u8
probabilities); expected read-outs are golden.moe.dispatch's queues.
"""

import numpy as np
import pytest

from rtl import routing
from rtl.dispatch import Dispatcher, exp_cycles, experts_layout, pool_entries, tokens_layout
from rtl.routing import Router
from sim.pysim_stream import run_streams
from sim.routing_images import check_beats, dispatch_beats, dispatch_words, routes, topk_words


def check_outputs(res, frames, k, max_tokens):
    experts = frames[0].shape[1]
    want_experts, want_tokens = dispatch_beats(frames, k)
    check_beats("o_experts", experts_layout(experts, max_tokens), res["o_experts"][0],
                want_experts)
    check_beats("o_tokens", tokens_layout(experts), res["o_tokens"][0], want_tokens)


def run_dispatch(frames, k, max_tokens, *, i_flow=1.0, o_flow=1.0, seed=0):
    """Run the golden TopK beats of ``frames`` through a Dispatcher; check both outputs."""
    experts = frames[0].shape[1]
    want_experts, want_tokens = dispatch_beats(frames, k)
    res = run_streams(Dispatcher(experts, k, max_tokens), {"i": dispatch_words(frames, k)},
                      {"o_experts": len(want_experts), "o_tokens": len(want_tokens)},
                      name=f"dispatch_{experts}_{k}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_outputs(res, frames, k, max_tokens)
    return res


def one_expert_frame(tokens, experts, winner):
    """Every token picks ``winner`` first; the rest of the choices are random."""
    u = np.random.default_rng(winner).integers(-100, 100, (tokens, experts))
    u[:, winner] = 1000
    return u


@pytest.mark.parametrize("experts, k", [(4, 1), (4, 4), (16, 2), (16, 3), (64, 4), (64, 1)])
def test_frames_back_to_back_with_gaps_and_backpressure(experts, k):
    rng = np.random.default_rng(experts + k)
    frames = [
        rng.integers(-300, 300, (23, experts)),           # a task-0 frame
        one_expert_frame(23, experts, experts - 1),       # a frame routed differently (task 1)
        rng.integers(-1, 1, (1, experts)),                # one token, ties
        np.zeros((5, experts), int),                      # all equal: experts 0..k-1 only
        rng.integers(-300, 300, (2, experts)),
    ]
    run_dispatch(frames, k, 23, i_flow=0.7, o_flow=0.5, seed=k)


def test_one_expert_takes_every_token_and_most_are_empty():
    u = np.full((129, 16), -1000)
    u[:, 9] = 1000                                        # every token picks expert 9 first
    u[:, [2, 5]] = np.random.default_rng(2).integers(0, 100, (129, 2))
    frames = [u]
    assert routes(u, 2).active == (2, 5, 9)               # 13 empty experts, 6 after the last
    assert routes(u, 2).lengths[9] == 129
    run_dispatch(frames, 2, 129, o_flow=0.8, seed=2)


@pytest.mark.parametrize("k, frames", [(2, [129]), (4, [129, 129]), (1, [1]), (3, [7, 1, 1, 30])])
def test_cycles_match_the_model_at_full_rate(k, frames):
    rng = np.random.default_rng(k)
    us = [rng.integers(-500, 500, (n, 16)) for n in frames]
    res = run_dispatch(us, k, max(frames))
    assert res["o_tokens"][1][-1] + 1 == exp_cycles(k, frames)


def test_next_frame_fills_while_the_previous_drains():
    # Double buffering: frame 1's first beat is taken before frame 0's read-out ends.
    rng = np.random.default_rng(3)
    frames = [rng.integers(-500, 500, (40, 16)) for _ in range(2)]
    res = run_dispatch(frames, 2, 40)
    frame1_first_in = res["i"][40]
    frame0_last_out = res["o_tokens"][1][2 * 40 - 1]
    assert frame1_first_in < frame0_last_out


def test_a_bank_waits_for_both_read_outs():
    # Short frames spread over many experts: the list is nearly as long as the queues,
    # and with slow consumers either stream may finish a frame last.
    rng = np.random.default_rng(4)
    frames = [rng.integers(-300, 300, (4, 16)) for _ in range(5)]
    res = run_dispatch(frames, 2, 4, o_flow=0.2, seed=9)
    ends = np.cumsum([len(routes(u, 2).active) for u in frames]) - 1
    list_ends = [res["o_experts"][1][n] for n in ends]
    token_ends = [res["o_tokens"][1][n] for n in range(7, 40, 8)]
    assert any(a > b for a, b in zip(list_ends, token_ends))
    assert any(a < b for a, b in zip(list_ends, token_ends))


@pytest.mark.parametrize("experts, k, lanes, frames", [
    (16, 2, 4, [20, 7, 3]), (16, 2, 16, [9, 9]), (16, 4, 8, [9, 1, 5, 4]), (4, 4, 4, [6, 2, 3]),
])
def test_router_bit_exact_and_cycle_exact(experts, k, lanes, frames):
    rng = np.random.default_rng(experts + k + lanes)
    us = [rng.integers(-300, 300, (n, experts)) for n in frames]
    want_experts, want_tokens = dispatch_beats(us, k)
    sinks = {"o_experts": len(want_experts), "o_tokens": len(want_tokens)}
    for flow in (1.0, 0.5):
        res = run_streams(Router(experts, k, max(frames), lanes), {"i": topk_words(us, lanes)},
                          sinks, name="router", i_flow=flow, o_flow=flow, seed=lanes)
        check_outputs(res, us, k, max(frames))
    full = run_streams(Router(experts, k, max(frames), lanes), {"i": topk_words(us, lanes)},
                       sinks, name="router")
    assert full["o_tokens"][1][-1] + 1 == routing.exp_cycles(experts, k, lanes, frames)


def test_pool_is_sized_by_k_not_by_experts():
    assert pool_entries(16, 2, 129) == 16 + 2 * 129
    assert pool_entries(64, 4, 129) == 64 + 4 * 129


@pytest.mark.parametrize("args, message", [
    ((16, 5, 8), r"k must be an integer in \[1, 4\], not 5"),
    ((2, 3, 8), r"k must be an integer in \[1, 2\], not 3"),
    ((65, 2, 8), r"experts must be an integer in \[2, 64\], not 65"),
    ((1, 1, 8), r"experts must be an integer in \[2, 64\], not 1"),
    ((16, 2, 0), r"max_tokens must be an integer in \[1, 4096\], not 0"),
    ((16, 2, 4097), r"max_tokens must be an integer in \[1, 4096\], not 4097"),
    ((16, 2, 12.0), r"max_tokens must be an integer in \[1, 4096\], not 12.0"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        Dispatcher(*args)


@pytest.mark.parametrize("args, message", [
    ((16, 2, 129, 3), r"lanes must divide experts \(16\), not 3"),
    ((16, 2, 0, 4), r"max_tokens must be an integer in \[1, 4096\], not 0"),
])
def test_router_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        Router(*args)
