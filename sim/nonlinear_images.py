"""Host side of the nonlinear units and the gating datapath: stimulus words and golden checks.

Shared by the Amaranth-simulator tests and the cocotb testbenches, so both drive
and check the units the same way; expected values come from ``golden/``.
"""

import numpy as np

from golden.layernorm import affine_params, int_layernorm
from golden.moe import dispatch, topk
from golden.softmax import CODE_ZERO, log2_codes, softmax_u8
from rtl import gating, layernorm, softmax

from moevit.packing import pack, unpack

__all__ = ["softmax_words", "check_softmax", "layernorm_batch", "layernorm_streams",
           "check_layernorm", "gating_streams", "check_gating"]

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
