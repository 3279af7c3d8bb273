"""TopK against golden.moe.topk (choices) and golden.softmax.softmax_u8 (their probabilities)."""

import numpy as np
import pytest

from rtl.topk import TopK, exp_cycles, out_layout
from sim.pysim_stream import run_streams
from sim.routing_images import check_beats, topk_beats, topk_words


def run_topk(frames, k, lanes, *, i_flow=1.0, o_flow=1.0, seed=0):
    """Run frames through TopK, check every beat against golden; return the stream result."""
    experts = frames[0].shape[1]
    expected = topk_beats(frames, k)
    res = run_streams(TopK(experts, k, lanes), {"i": topk_words(frames, lanes)},
                      {"o": len(expected)}, name=f"topk_{experts}_{k}_{lanes}",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_beats("topk", out_layout(experts, k), res["o"][0], expected)
    return res


def corner_frames(tokens, experts):
    """Named degenerate rows: all equal, ties among later ids, one expert always first."""
    equal = np.full((tokens, experts), 7)                     # tie rule: experts 0..k-1
    late = np.full((tokens, experts), -500)
    late[:, experts // 2:] = 30                               # ties only among the upper half
    late[0, -1] = 31                                          # ...except the last id wins once
    same = np.zeros((tokens, experts), int)
    same[:, experts - 1] = 32767                              # the top id, int16 extremes
    same[:, 0] = -32768
    return [equal, late, same]


@pytest.mark.parametrize("experts, k, lanes", [
    (4, 1, 1), (4, 4, 2), (16, 2, 1), (16, 2, 4), (16, 3, 16), (16, 4, 8), (64, 4, 8),
    (64, 1, 16), (64, 2, 4),
])
def test_random_and_corner_rows_with_gaps_and_backpressure(experts, k, lanes):
    rng = np.random.default_rng(experts * 100 + k * 10 + lanes)
    frames = [rng.integers(-400, 400, (9, experts)), rng.integers(-3, 3, (5, experts)),
              *corner_frames(2, experts), rng.integers(-32768, 32768, (1, experts))]
    run_topk(frames, k, lanes, i_flow=0.6, o_flow=0.4, seed=k + lanes)


def test_tie_rule_keeps_the_lower_expert():
    # Golden fixes the expected choices; the named cases document what they mean.
    frames = corner_frames(3, 16)
    expected = topk_beats(frames, 4)
    assert expected[0]["idx"] == [0, 1, 2, 3]               # all equal
    assert expected[3]["idx"] == [15, 8, 9, 10]             # one larger late id, then ties
    assert expected[4]["idx"] == [8, 9, 10, 11]
    run_topk(frames, 4, 1, o_flow=0.5)
    run_topk(frames, 4, 16, i_flow=0.5)


@pytest.mark.parametrize("experts, k, lanes, tokens", [
    (16, 2, 1, 129), (16, 2, 16, 129), (64, 4, 16, 129), (64, 4, 1, 20), (4, 1, 4, 1),
])
def test_cycles_match_the_model_at_full_rate(experts, k, lanes, tokens):
    rng = np.random.default_rng(tokens)
    res = run_topk([rng.integers(-1000, 1000, (tokens, experts))], k, lanes)
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(experts, lanes, tokens)


def test_backpressure_gives_one_token_of_slack():
    # A stalled output stops i only once the next row end finds the register full.
    rng = np.random.default_rng(1)
    run_topk([rng.integers(-50, 50, (12, 16))], 2, 16, o_flow=0.2, seed=4)


@pytest.mark.parametrize("args, message", [
    ((16, 5), r"k must be an integer in \[1, 4\], not 5"),
    ((3, 4), r"k must be an integer in \[1, 3\], not 4"),
    ((65, 2), r"experts must be an integer in \[2, 64\], not 65"),
    ((16, 0), r"k must be an integer in \[1, 4\], not 0"),
    ((16, 2, 3), r"lanes must divide experts \(16\), not 3"),
    ((64, 2, 32), r"lanes must be an integer in \[1, 16\], not 32"),
    ((16, 2, 0), r"lanes must be an integer in \[1, 16\], not 0"),
    ((16, True), r"k must be an integer in \[1, 4\], not True"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        TopK(*args)
