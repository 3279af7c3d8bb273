"""Host side of the nonlinear units and the gating datapath: stimulus words and golden checks.

Shared by the Amaranth-simulator tests and the cocotb testbenches, so both drive
and check the units the same way; expected values come from ``golden/``.
"""

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from golden.layernorm import affine_params, int_layernorm
from golden.moe import dispatch, topk
from golden.softmax import log2_codes, softmax_u8
from rtl import gating, layernorm

from .packing import pack, unpack

__all__ = ["softmax_words", "check_softmax", "layernorm_batch", "layernorm_streams",
           "check_layernorm", "gating_streams", "check_gating"]

_SOFTMAX = {"probs": (softmax_u8, 8), "codes": (log2_codes, 4)}


def softmax_words(u, lanes):
    """Input beats for rows ``u`` (rows x row) of int16 scores, ``lanes`` per beat."""
    rows, row = u.shape
    layout = data.ArrayLayout(signed(16), lanes)
    return [pack(layout, u[r, b * lanes:(b + 1) * lanes]) for r in range(rows)
            for b in range(row // lanes)]


def check_softmax(words, u, lanes, mode):
    """Assert the output words are ``golden.softmax`` of ``u`` in ``mode``."""
    fn, width = _SOFTMAX[mode]
    got = np.concatenate([unpack(data.ArrayLayout(unsigned(width), lanes), w) for w in words])
    expected = fn(u)
    if not np.array_equal(got.reshape(u.shape), expected):
        bad = np.argwhere(got.reshape(u.shape) != expected)[0]
        raise AssertionError(f"softmax {mode}: row {bad[0]} score {bad[1]}: "
                             f"got {got.reshape(u.shape)[tuple(bad)]}, expected {expected[tuple(bad)]}")


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
