"""The MoE combine unit in Amaranth's simulator, against ``golden.moe.combine``."""

import numpy as np
import pytest

from golden.moe import combine, dispatch, topk
from golden.softmax import softmax_u8
from rtl.combine import Combiner, exp_cycles, flush_layout, out_layout
from rtl.linear import y_layout
from moevit.packing import pack, unpack
from sim.pysim_stream import run_streams


def routed_layer(rng, tokens, experts, k, dim, *, u=None, y_range=(-32768, 32768)):
    """Gate logits -> golden dispatch, random expert outputs, and the golden combined rows."""
    u = rng.integers(-400, 400, (tokens, experts)) if u is None else u
    routes = dispatch(topk(u, k), softmax_u8(u), experts)
    outputs = {e: rng.integers(*y_range, (len(routes.tokens[e]), dim)) for e in routes.active}
    return routes, outputs, combine(routes, outputs, tokens, dim)


def input_beats(routes, outputs, po, dim):
    """The kernel's y beats for every active expert's queue (fold-major within a token)."""
    folds = -(-dim // po)
    layout = y_layout(po, 16)
    beats = []
    for e in routes.active:
        y = np.zeros((len(routes.tokens[e]), folds * po), np.int64)
        y[:, :dim] = outputs[e]
        for row, (token, score) in enumerate(zip(routes.tokens[e], routes.scores[e])):
            for f in range(folds):
                beats.append(pack(layout, {
                    "data": y[row, f * po:(f + 1) * po], "token": int(token), "fold": f,
                    "score": int(score),
                    "last": int(row == len(routes.tokens[e]) - 1 and f == folds - 1)}))
    return beats


def run_layers(layers, *, max_tokens, dim, po, i_flow=1.0, o_flow=1.0, seed=0):
    """Run several layers through one Combiner; check each flush against golden; return cycles."""
    i_beats, flushes, out_count = [], [], 0
    folds = -(-dim // po)
    for routes, outputs, _, tokens in layers:
        i_beats += input_beats(routes, outputs, po, dim)
        flushes.append(pack(flush_layout, {"tokens": tokens, "batches": len(routes.active)}))
        out_count += tokens * folds
    res = run_streams(Combiner(max_tokens, dim, po), {"i": i_beats, "flush": flushes},
                      {"o": out_count}, name=f"combine_{dim}_{po}", seed=seed,
                      i_flow=i_flow, o_flow=o_flow)
    words, cycles = res["o"]
    beats = [unpack(out_layout(po), w) for w in words]
    pos = 0
    for n, (_, _, expected, tokens) in enumerate(layers):
        got = np.zeros((tokens, folds * po), np.int64)
        for index in range(tokens * folds):
            beat = beats[pos + index]
            assert (beat["token"], beat["fold"]) == divmod(index, folds), f"layer {n} beat {index}"
            assert beat["last"] == (index == tokens * folds - 1)
            got[beat["token"], beat["fold"] * po:(beat["fold"] + 1) * po] = beat["data"]
        pos += tokens * folds
        assert np.array_equal(got[:, :dim], expected), f"layer {n}"
    return res, len(i_beats)


@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.6, 0.5)])
def test_two_layers_back_to_back(i_flow, o_flow):
    rng = np.random.default_rng(1)
    dim, po = 40, 8
    layers = []
    for tokens, experts, k in ((33, 16, 2), (20, 8, 4)):
        routes, outputs, expected = routed_layer(rng, tokens, experts, k, dim)
        layers.append((routes, outputs, expected, tokens))
    run_layers(layers, max_tokens=33, dim=dim, po=po, i_flow=i_flow, o_flow=o_flow)


def test_corner_cases():
    rng = np.random.default_rng(2)
    dim, po, tokens = 16, 4, 12
    one = np.zeros((tokens, 4), int)
    one[:, 1] = 5000                                      # every token picks expert 1 (k = 1)
    same = routed_layer(rng, tokens, 4, 1, dim, u=one)
    # Saturation: scores that sum past 1.0 (255 + 255) with the largest outputs, both signs.
    idx = np.tile([2, 3], (tokens, 1))
    probs = np.zeros((tokens, 4), np.uint8)
    probs[:, 2:] = 255
    routes = dispatch(idx, probs, 4)
    sat, neg = ({e: np.full((tokens, dim), v) for e in (2, 3)} for v in (32767, -32768))
    sat = (routes, sat, combine(routes, sat, tokens, dim))
    neg = (routes, neg, combine(routes, neg, tokens, dim))
    # A layer in which no expert received a token: zeros at once.
    empty = (dispatch(np.zeros((0, 1), int), np.zeros((0, 4), np.uint8), 4), {},
             np.zeros((tokens, dim), np.int16), tokens)
    layers = [(*same, tokens), (*sat, tokens), empty, (*neg, tokens)]
    assert (layers[1][2] == 32767).all() and (layers[3][2] == -32768).all()
    run_layers(layers, max_tokens=tokens, dim=dim, po=po, o_flow=0.7)


def test_full_rate_cycles_match_model():
    rng = np.random.default_rng(3)
    dim, po, tokens = 48, 16, 17
    routes, outputs, expected = routed_layer(rng, tokens, 8, 2, dim)
    res, beats = run_layers([(routes, outputs, expected, tokens)], max_tokens=tokens, dim=dim, po=po)
    first_in, last_out = res["i"][0], res["o"][1][-1]
    assert last_out - first_in + 1 == exp_cycles(beats, tokens, 3)


@pytest.mark.parametrize("args, message", [
    ((0, 8, 4), r"max_tokens must be an integer in \[1, 4096\], not 0"),
    ((8, 0, 4), r"dim must be an integer in \[1, 4096\], not 0"),
    ((8, 8, 65), r"po must be an integer in \[1, 64\], not 65"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        Combiner(*args)
