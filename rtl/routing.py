"""Expert routing: :class:`rtl.topk.TopK` feeding :class:`rtl.dispatch.Dispatcher`.

The selection-and-dispatch half of the gating datapath, after the softmax::

    i {u[L], p[L], token, last} --> TopK(E, k, L) --> Dispatcher(E, k, N) --> o_experts
                                                                          --> o_tokens

Its ports are those of the two units (see their modules). The gate GEMV (the
linear kernel with the task's gate matrix image: the task id only selects which
image is sent) and the softmax unit sit upstream.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import dispatch, topk
from .params import validating

__all__ = ["Router", "exp_cycles"]


class Router(wiring.Component):
    """Top-k selection and per-expert queues of gate-logit rows.

    Parameters
    ----------
    experts : int, 2..64
    k : int, 1..min(experts, 4)
    max_tokens : int, 1..4096
    lanes : int, 1..min(experts, 16), divides ``experts``

    Members
    -------
    i : In(stream.Signature(topk.in_layout(lanes)))
        As :class:`rtl.topk.TopK`'s ``i``.
    o_experts, o_tokens : Out(...)
        As :class:`rtl.dispatch.Dispatcher`'s.

    Throughput: a token every ``max(E / lanes, k)`` cycles (TopK's row, or the
    dispatcher's ``k`` appends). Backpressure: both outputs may stall at any time.
    Cycle model: :func:`exp_cycles`. Tested: E = 16, k = 2, 129 tokens on Verilog.
    """

    def __init__(self, experts, k, max_tokens, lanes=1):
        with validating(self):
            topk._check(experts, k, lanes)
            dispatch._check(experts, k, max_tokens)
        self._params = (experts, k, max_tokens, lanes)
        super().__init__({
            "i": In(stream.Signature(topk.in_layout(lanes))),
            "o_experts": Out(stream.Signature(dispatch.experts_layout(experts, max_tokens))),
            "o_tokens": Out(stream.Signature(dispatch.tokens_layout(experts))),
        })

    def elaborate(self, platform):
        m = Module()
        experts, k, max_tokens, lanes = self._params
        m.submodules.topk = sel = topk.TopK(experts, k, lanes)
        m.submodules.dispatch = queues = dispatch.Dispatcher(experts, k, max_tokens)
        wiring.connect(m, wiring.flipped(self.i), sel.i)
        wiring.connect(m, sel.o, queues.i)
        wiring.connect(m, queues.o_experts, wiring.flipped(self.o_experts))
        wiring.connect(m, queues.o_tokens, wiring.flipped(self.o_tokens))
        return m


def exp_cycles(experts, k, lanes, frames):
    """Cycles from the first ``i`` beat (offered at cycle 0, then back to back) to the last
    ``o_tokens`` transfer, both outputs always ready; ``frames`` lists token counts.

    Per token ``n``: its row end enters TopK's s1 at ``a_n``; s2 moves it to the output
    register at ``c_n = max(a_n + 1, x_{n-1})`` (the register frees when the dispatcher
    takes token ``n-1`` at ``x_{n-1}``), and the next row's beats resume then, so
    ``a_{n+1} = c_n + E/lanes - 1``. The dispatcher appends from ``max(c_n + 1,
    x_{n-1} + 1)`` (and once the frame's bank is free), ``k`` cycles; its read-out
    follows :func:`rtl.dispatch.exp_cycles`.
    """
    beats = experts // lanes
    a, x = beats - 1, -1
    release = []
    for f, tokens in enumerate(frames):
        bank_free = release[f - 2] + 1 if f >= 2 else 0
        for _ in range(tokens):
            c = max(a + 1, x)
            w = max(c + 1, x + 1, bank_free)
            x = w + k - 1
            a = c + beats - 1
        read = max(x + 1, release[f - 1] + 1 if f >= 1 else 0)
        release.append(read + k * tokens)
    return release[-1] + 1
