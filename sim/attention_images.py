"""Host side of :class:`rtl.compute.attention.AttentionKernel`: K/V/Q beats, golden outputs, checks.

Shared by the Amaranth-simulator tests and the cocotb testbench.
"""

import math

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.gemm import int8_matmul
from golden.quant import dyadic, requantize
from golden.softmax import LOG2_FRAC, attention_from_scores
from moevit.packing import pack, unpack
from rtl.compute.attention import beat_layout

__all__ = ["random_heads", "golden_scores", "golden_attention", "attention_streams",
           "check_attention", "FixedScale"]


def random_heads(rng, heads, n, head_dim):
    """int8 q, k, v of shape (heads, n, head_dim) with a realistic score scale (mult, shift)."""
    q, k = (np.clip(np.round(rng.normal(0, 40, (heads, n, head_dim))), -128, 127).astype(np.int64)
            for _ in range(2))
    v = rng.integers(-128, 128, (heads, n, head_dim))
    s_q, s_k = 2.0 / 127, 2.0 / 127               # q, k ~ +-2 at int8
    mult, shift = dyadic(s_q * s_k / math.sqrt(head_dim) * math.log2(math.e) * (1 << LOG2_FRAC))
    return q, k, v, int(mult), int(shift)


def golden_scores(q, k, mult, shift):
    """Per head: the requantized scores ``u = requantize(q.k, mult, shift, bits=16)``,
    shape (heads, n rows, n keys)."""
    return np.stack([requantize(int8_matmul(q[h], k[h].T), mult, shift, bits=16)
                     for h in range(q.shape[0])])


def golden_attention(q, k, v, mult, shift, codes="log2"):
    """Per head: requantized q.k -> the ``codes`` form's codes -> its P.V (int8)."""
    return np.stack([attention_from_scores(u, v[h], codes)[1]
                     for h, u in enumerate(golden_scores(q, k, mult, shift))])


def _tensor_beats(config, t):
    # t: (H, n, head_dim) of one head group -> beats, last on the final one.
    layout = beat_layout(config.h, config.dp)
    _, n, _ = t.shape
    beats = []
    for row in range(n):
        for s in range(config.slices):
            beats.append(pack(layout, {"data": t[:, row, s * config.dp:(s + 1) * config.dp],
                                       "last": int(row == n - 1 and s == config.slices - 1)}))
    return beats


def attention_streams(config, q, k, v):
    """``(k, v, q beats, o count)`` for all heads (a multiple of ``config.h``), group by group."""
    heads, n, _ = q.shape
    if heads % config.h:
        raise ValueError(f"heads ({heads}) must be a multiple of h ({config.h})")
    kb, vb, qb = [], [], []
    for g in range(0, heads, config.h):
        kb += _tensor_beats(config, k[g:g + config.h])
        vb += _tensor_beats(config, v[g:g + config.h])
        qb += _tensor_beats(config, q[g:g + config.h])
    return kb, vb, qb, len(qb)


def check_attention(config, words, expected):
    """Assert the ``o`` words are ``expected`` (heads, n, head_dim), ``last`` per group."""
    heads, n, hd = expected.shape
    beats = [unpack(beat_layout(config.h, config.dp), w) for w in words]
    per_group = n * config.slices
    if len(beats) != per_group * heads // config.h:
        raise AssertionError(f"{len(beats)} output beats, expected {per_group * heads // config.h}")
    for g in range(heads // config.h):
        group = beats[g * per_group:(g + 1) * per_group]
        got = np.stack([b["data"].reshape(config.h, config.dp) for b in group])   # (n*S, H, dp)
        got = got.reshape(n, config.slices, config.h, config.dp).transpose(2, 0, 1, 3).reshape(
            config.h, n, hd)
        want = expected[g * config.h:(g + 1) * config.h]
        if not np.array_equal(got, want):
            h, row, d = np.argwhere(got != want)[0]
            raise AssertionError(f"group {g} head {h} row {row} dim {d}: got {got[h, row, d]}, "
                                 f"expected {want[h, row, d]}")
        if [b["last"] for b in group] != [0] * (per_group - 1) + [1]:
            raise AssertionError(f"group {g}: last flags")


class FixedScale(wiring.Component):
    """The kernel with its score requantizer tied to constants (for stream-only harnesses)."""

    def __init__(self, kernel, mult, shift):
        self._kernel, self._mult, self._shift = kernel, mult, shift
        layout = beat_layout(kernel.config.h, kernel.config.dp)
        super().__init__({"k": In(stream.Signature(layout)), "v": In(stream.Signature(layout)),
                          "q": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.kernel = kernel = self._kernel
        for name in ("k", "v", "q"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(kernel, name))
        wiring.connect(m, kernel.o, wiring.flipped(self.o))
        m.d.comb += [kernel.mult.eq(self._mult), kernel.shift.eq(self._shift)]
        return m
