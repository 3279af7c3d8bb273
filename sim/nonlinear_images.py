"""Host side of the nonlinear units and the gating datapath: stimulus words and golden checks.

Shared by the Amaranth-simulator tests and the cocotb testbenches, so both drive
and check the units the same way; expected values come from ``golden/``.
"""

import math

import numpy as np

from golden.gelu import gelu_int
from golden.layernorm import affine_params, int_layernorm
from golden.moe import combine, dispatch, topk
from golden.softmax import CODE_ZERO, log2_codes, normalized_reciprocal, softmax_u8
from moevit.packing import pack, unpack
from rtl.compute import gelu, layernorm, recip, softmax
from rtl.compute.linear import y_layout
from rtl.moe import combine as combiner
from rtl.moe import gating

__all__ = ["softmax_words", "check_softmax", "layernorm_batch", "layernorm_streams",
           "check_layernorm", "gating_streams", "check_gating", "gelu_streams", "check_gelu",
           "routed_layer", "combine_streams", "check_combine", "edge_operands",
           "check_reciprocal", "check_isqrt"]

_SOFTMAX = {"probs": (softmax_u8, 8), "codes": (log2_codes, 4)}


def softmax_words(rows, lanes):
    """Input beats for ``rows`` (a sequence of 1-D int16 score rows, or a 2-D array), ``lanes``
    scores per beat; ``last`` and ``pad`` on each row's final beat."""
    layout = softmax.in_layout(lanes)
    words = []
    for row in rows:
        row = np.asarray(row, dtype=np.int64)
        beats = -(-len(row) // lanes)
        padded = np.zeros(beats * lanes, np.int64)
        padded[:len(row)] = row
        words += [pack(layout, {"data": padded[b * lanes:(b + 1) * lanes],
                                "last": int(b == beats - 1),
                                "pad": beats * lanes - len(row) if b == beats - 1 else 0})
                  for b in range(beats)]
    return words


def check_softmax(words, rows, lanes, mode):
    """Assert the output words are ``golden.softmax`` of each row (``mode``), framed like ``i``."""
    fn, _ = _SOFTMAX[mode]
    out = [unpack(softmax.out_layout(lanes, mode), w) for w in words]
    pos = 0
    for r, row in enumerate(rows):
        beats = -(-len(row) // lanes)
        beat_out = out[pos:pos + beats]
        if len(beat_out) < beats:
            raise AssertionError(f"softmax {mode}: {len(out)} beats, row {r} incomplete")
        got = np.concatenate([o["data"] for o in beat_out])
        expected = fn(np.asarray(row, dtype=np.int64)[None])[0]
        zero = CODE_ZERO if mode == "codes" else 0
        expected = np.concatenate([expected, np.full(beats * lanes - len(row), zero)])
        if not np.array_equal(got, expected):
            bad = int(np.argwhere(got != expected)[0][0])
            raise AssertionError(f"softmax {mode}: row {r} (length {len(row)}) score {bad}: "
                                 f"got {got[bad]}, expected {expected[bad]}")
        framing = [(o["last"], o["pad"]) for o in beat_out]
        if framing != [(0, 0)] * (beats - 1) + [(1, beats * lanes - len(row))]:
            raise AssertionError(f"softmax {mode}: row {r}: framing (last, pad) {framing}")
        pos += beats
    if pos != len(out):
        raise AssertionError(f"softmax {mode}: {len(out)} beats, expected {pos}")


def layernorm_batch(rng, tokens, d, *, extremes=False):
    """Tokens at a realistic residual scale, LayerNorm parameters and the golden output."""
    x = np.clip(rng.normal(0, 3000, (tokens, d)) + rng.normal(0, 2000, (tokens, 1)),
                -32768, 32767).astype(np.int64)
    if extremes and tokens >= 3:
        x[0] = 1234                                           # constant: only eps keeps it finite
        x[1] = np.where(np.arange(d) % 2, 32767, -32768)      # the largest variance
        x[2] = 0
        x[2, 0] = -32768                                      # one-hot: z saturates
    gamma, beta = 1 + rng.normal(0, 0.3, d), rng.normal(0, 0.2, d)
    gain, bias, shift = affine_params(gamma, beta, 4.5 / 255, int(rng.integers(-20, 20)))
    eps = int(rng.integers(1, 5000))
    return {"x": x, "gain": gain, "bias": bias, "shift": shift, "eps": eps,
            "y": int_layernorm(x, gain, bias, shift, eps)}


def layernorm_streams(batches, d, lanes):
    """``(p words, i words, o count)`` for a list of :func:`layernorm_batch` batches."""
    beats = d // lanes
    p_words, i_words, count = [], [], 0
    for b in batches:
        for j in range(beats):
            sl = slice(j * lanes, (j + 1) * lanes)
            p_words.append(pack(layernorm.param_layout(lanes), {
                "gain": b["gain"][sl], "bias": b["bias"][sl], "shift": b["shift"], "eps": b["eps"]}))
        tokens = len(b["x"])
        for t in range(tokens):
            for j in range(beats):
                i_words.append(pack(layernorm.in_layout(lanes), {
                    "data": b["x"][t, j * lanes:(j + 1) * lanes],
                    "last": int(t == tokens - 1 and j == beats - 1)}))
        count += tokens * beats
    return p_words, i_words, count


def check_layernorm(words, batches, d, lanes):
    """Assert the output words hold every batch's golden rows, ``last`` on each batch's end."""
    beats = d // lanes
    out = [unpack(layernorm.out_layout(lanes), w) for w in words]
    pos = 0
    for n, b in enumerate(batches):
        tokens = len(b["x"])
        got = np.concatenate([o["data"] for o in out[pos:pos + tokens * beats]]).reshape(tokens, d)
        if not np.array_equal(got, b["y"]):
            raise AssertionError(f"layernorm batch {n}: rows differ from golden")
        if [o["last"] for o in out[pos:pos + tokens * beats]] != [0] * (tokens * beats - 1) + [1]:
            raise AssertionError(f"layernorm batch {n}: last flags")
        pos += tokens * beats


def gating_streams(frames, k):
    """Input words for frames of gate logits (tokens x experts) and the expected output beats."""
    words, expected = [], []
    for u in frames:
        flat = u.ravel()
        words += [pack(gating.in_layout, {"u": int(v), "last": int(n == flat.size - 1)})
                  for n, v in enumerate(flat)]
        routes = dispatch(topk(u, k), softmax_u8(u), u.shape[1])
        beats = [{"expert": e, "token": int(t), "score": int(p), "count": len(routes.tokens[e]),
                  "first": int(n == 0), "last": 0}
                 for e in routes.active
                 for n, (t, p) in enumerate(zip(routes.tokens[e], routes.scores[e]))]
        beats[-1]["last"] = 1
        expected += beats
    return words, expected


def check_gating(words, expected, experts):
    """Assert the output words are the expected queue entries, in order."""
    got = [unpack(gating.out_layout(experts), w) for w in words]
    for n, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            raise AssertionError(f"gating beat {n}: got {g}, expected {e}")
    if len(got) != len(expected):
        raise AssertionError(f"gating: {len(got)} beats, expected {len(expected)}")


def gelu_streams(tables, batches, lanes, entries):
    """``t`` words (one table per batch) and ``i`` words (codes, ``lanes`` per beat, padded)."""
    t_words = [pack(gelu.table_layout(entries), tab[j:j + entries])
               for tab in tables for j in range(0, gelu.GELU_ENTRIES, entries)]
    i_words = []
    for codes in batches:
        beats = -(-len(codes) // lanes)
        padded = np.resize(codes, beats * lanes)
        i_words += [pack(gelu.io_layout(lanes), {"data": padded[b * lanes:(b + 1) * lanes],
                                                 "last": int(b == beats - 1)})
                    for b in range(beats)]
    return t_words, i_words


def check_gelu(words, tables, batches, lanes):
    """Assert the ``o`` words hold ``gelu_int`` of every batch's codes, ``last`` on its end."""
    out = [unpack(gelu.io_layout(lanes), w) for w in words]
    pos = 0
    for n, (table, codes) in enumerate(zip(tables, batches)):
        beats = -(-len(codes) // lanes)
        got = np.concatenate([o["data"] for o in out[pos:pos + beats]])[:len(codes)]
        if not np.array_equal(got, gelu_int(codes, table)):
            raise AssertionError(f"gelu batch {n}: codes differ from golden")
        if [o["last"] for o in out[pos:pos + beats]] != [0] * (beats - 1) + [1]:
            raise AssertionError(f"gelu batch {n}: last flags")
        pos += beats


def routed_layer(rng, tokens, experts, k, dim, *, u=None, y_range=(-32768, 32768)):
    """Gate logits -> golden dispatch, random expert outputs, and the golden combined rows."""
    u = rng.integers(-400, 400, (tokens, experts)) if u is None else u
    routes = dispatch(topk(u, k), softmax_u8(u), experts)
    outputs = {e: rng.integers(*y_range, (len(routes.tokens[e]), dim)) for e in routes.active}
    return routes, outputs, combine(routes, outputs, tokens, dim)


def _expert_beats(routes, outputs, po, dim):
    """The linear kernel's y beats for every active expert's queue (fold-major per token)."""
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


def combine_streams(layers, po, dim):
    """``(i beats, flush words, o count)`` of layers ``(routes, outputs, expected, tokens)``."""
    i_beats, flushes, out_count = [], [], 0
    for routes, outputs, _, tokens in layers:
        i_beats += _expert_beats(routes, outputs, po, dim)
        flushes.append(pack(combiner.flush_layout,
                            {"tokens": tokens, "batches": len(routes.active)}))
        out_count += tokens * -(-dim // po)
    return i_beats, flushes, out_count


def check_combine(words, layers, po, dim):
    """Assert the ``o`` words hold every layer's golden combined rows, token major."""
    folds = -(-dim // po)
    beats = [unpack(combiner.out_layout(po), w) for w in words]
    pos = 0
    for n, (_, _, expected, tokens) in enumerate(layers):
        got = np.zeros((tokens, folds * po), np.int64)
        for index in range(tokens * folds):
            beat = beats[pos + index]
            if (beat["token"], beat["fold"]) != divmod(index, folds):
                raise AssertionError(f"combine layer {n} beat {index}: token and fold")
            if beat["last"] != (index == tokens * folds - 1):
                raise AssertionError(f"combine layer {n} beat {index}: last")
            got[beat["token"], beat["fold"] * po:(beat["fold"] + 1) * po] = beat["data"]
        pos += tokens * folds
        if not np.array_equal(got[:, :dim], expected):
            raise AssertionError(f"combine layer {n}: rows differ from golden")


def edge_operands(rng, width, count, lo=1):
    """Operands of ``width`` bits from ``lo``: the edges (0..3, the largest, around the
    top bit) then ``count`` random ones."""
    edges = [0, 1, 2, 3, (1 << width) - 1, 1 << (width - 1), (1 << (width - 1)) - 1,
             (1 << (width - 1)) + 1]
    return ([v for v in edges if lo <= v < 1 << width]
            + [int(v) for v in rng.integers(lo, 1 << width, count, dtype=np.uint64)])


def check_reciprocal(words, dens, width):
    """Assert the ``o`` words are ``golden.softmax.normalized_reciprocal`` of ``dens``."""
    if len(words) != len(dens):
        raise AssertionError(f"reciprocal: {len(words)} results for {len(dens)} operands")
    rec, k = normalized_reciprocal(np.array(dens, dtype=np.int64))
    for n, (word, r, b) in enumerate(zip(words, rec.tolist(), k.tolist())):
        got = unpack(recip.recip_layout(width), word)
        if (got["rec"], got["k"]) != (r, b):
            raise AssertionError(f"reciprocal of {dens[n]}: got {got}, expected {(r, b)}")


def check_isqrt(words, values):
    """Assert the ``o`` words are ``math.isqrt`` of ``values``."""
    if len(words) != len(values):
        raise AssertionError(f"isqrt: {len(words)} results for {len(values)} operands")
    for v, got in zip(values, words):
        if got != math.isqrt(v):
            raise AssertionError(f"isqrt({v}): got {got}, expected {math.isqrt(v)}")
