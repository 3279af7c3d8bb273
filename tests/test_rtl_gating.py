"""The gating datapath against golden.moe (topk, dispatch) and golden.softmax.softmax_u8."""

import numpy as np
import pytest

from golden.moe import dispatch, topk
from golden.softmax import softmax_u8
from rtl.moe.gating import Gating, exp_cycles
from sim.nonlinear_images import check_gating, gating_streams
from sim.pysim_stream import run_streams


def run_frames(frames, k, *, max_tokens, i_flow=1.0, o_flow=1.0, seed=0):
    experts = frames[0].shape[1]
    words, expected = gating_streams(frames, k)
    res = run_streams(Gating(experts, k, max_tokens), {"i": words}, {"o": len(expected)},
                      name=f"gating_{experts}_{k}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_gating(res["o"][0], expected, experts)
    return res


def routes_of(u, k):
    return dispatch(topk(u, k), softmax_u8(u), u.shape[1])


@pytest.mark.parametrize("experts, k", [(4, 1), (16, 2), (16, 4), (64, 4), (5, 3)])
def test_random_frames_with_gaps_and_backpressure(experts, k):
    rng = np.random.default_rng(experts * 10 + k)
    frames = [rng.integers(-300, 300, (n, experts)) for n in (9, 1, 6)]
    frames[1][:] = rng.integers(-2, 2, (1, experts))     # ties
    run_frames(frames, k, max_tokens=9, i_flow=0.6, o_flow=0.5, seed=k)


def test_corner_cases():
    tokens, experts = 12, 16
    same = np.zeros((tokens, experts), int)
    same[:, 9] = 500                                      # every token picks expert 9 first
    equal = np.zeros((tokens, experts), int)              # all equal: experts 0 and 1 (tie rule)
    late_ties = np.full((tokens, experts), -100)
    late_ties[:, [3, 7, 12]] = 40                         # ties among later ids: 3 and 7 win
    frames = [same, equal, late_ties]
    assert routes_of(equal, 2).active == (0, 1)
    assert routes_of(late_ties, 2).active == (3, 7)
    run_frames(frames, 2, max_tokens=tokens, o_flow=0.7)


def test_m3vit_frame_and_cycles():
    rng = np.random.default_rng(5)
    u = rng.integers(-400, 400, (129, 16))
    res = run_frames([u], 2, max_tokens=129)
    routes = routes_of(u, 2)
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(16, 2, routes.lengths)


@pytest.mark.parametrize("args, message", [
    ((16, 5, 8), r"k must be an integer in \[1, 4\], not 5"),
    ((3, 4, 8), r"k must be an integer in \[1, 3\], not 4"),
    ((65, 2, 8), r"experts must be an integer in \[2, 64\], not 65"),
    ((16, 2, 0), r"max_tokens must be an integer in \[1, 4096\], not 0"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        Gating(*args)


def test_cycles_with_empty_experts():
    u = np.full((10, 8), -200)
    u[:, 2] = 100
    u[:, 5] = 50                                          # experts 0, 1, 3, 4 empty; 6, 7 after the last
    res = run_frames([u], 2, max_tokens=10)
    lengths = routes_of(u, 2).lengths
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(8, 2, lengths)
