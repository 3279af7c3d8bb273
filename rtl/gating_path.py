"""The whole expert-gating datapath: gate GEMV, softmax, top-k, per-expert queues.

::

    w (gate matrix image of the task) --+
    x (LN2 token rows) -----------------+--> LinearKernel --y--+--> SoftmaxUnit(E, probs) --p--+
                                            (int16 logits u)   |                              |
                                                               +--> side FIFO {u, token, last}+
                                                                                              |
    o_experts, o_tokens <-- Dispatcher(E, k, N) <-- TopK(E, k, L) <-- {u, p, token, last} <---+

**Task id.** The gate matrix of task ``t`` is just another matrix image on ``w``
(``requantize(h @ W_gate[t].T, mult, shift, bits=16)`` into the log2 domain): the
task id selects which image the host or DMA sends before a frame's tokens, and the
kernel's double-buffered weight banks load the next frame's gate (either task)
while the current one computes. Nothing in this datapath depends on the task.

**Why the linear kernel and not a dedicated MAC array.** The gate is 0.3 % of the
model's MACs (129 x 192 x 16 per MoE layer). On the shared PI x PO x T kernel its
pace is set by the token rows streaming in at PI features per cycle: ``D / PI``
cycles per token (12 at D = 192, PI = 16; 1672 cycles per 129-token frame on the
16x16x3 kernel, image load included, :func:`rtl.linear.exp_cycles`), about the
softmax unit's own pace (10 cycles per 16-expert row at 2..16 lanes), and a few
percent of the layer's expert work on the same kernel (258 routed tokens x 2 x
192 x 384 MACs). A dedicated array at that pace needs ``E * D / 12`` = 256 MACs
(256 DSPs, 128 packed) plus its own weight memory (2 tasks x 6 layers x 192 x 16
bytes), idle for the rest of the layer; one MAC per expert (16 DSPs) would take
192 cycles per token, 16x slower than the kernel. Reusing the kernel costs no DSP.

**Alignment.** The softmax unit needs the whole row before it emits ``p``, and TopK
needs ``u`` (not ``p``: quantized probabilities tie where logits do not) next to
``p``. Each ``y`` beat is forked to the softmax and to a side FIFO holding
``{u, token, last}``; the FIFO's head joins the softmax output. The FIFO holds the
softmax unit's three row buffers plus its output pipeline, so it never limits it.

Row shape: a token's logits must come out of the kernel as consecutive beats:
``E <= PO`` (one beat, the first ``E`` lanes; ``L = E``) or ``E`` a multiple of
``PO`` with ``T = 1`` (``E / PO`` folds; ``L = PO``), and ``L <= 16``.
"""

from amaranth.hdl import Module, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import dispatch, topk
from .linear import TOKEN_BITS, LinearConfig, LinearKernel, x_layout
from .linear import batch_cycles
from .linear import exp_cycles as linear_cycles
from .params import validating
from .softmax import SoftmaxUnit
from .softmax import exp_cycles as softmax_cycles

__all__ = ["GatingPath", "lanes_for", "exp_cycles", "route_cycles"]

#: Output register stages of the softmax unit in "probs" mode, plus margin.
_SOFTMAX_TAIL = 8


def lanes_for(config, experts):
    """TopK / softmax lanes for ``experts`` logits from a kernel of ``config`` (see the module)."""
    return min(experts, config.po)


class GatingPath(wiring.Component):
    """Gate GEMV on a linear kernel, then softmax, top-k and per-expert queues.

    Parameters
    ----------
    config : LinearConfig
        The gate kernel; ``out_width`` must be 16 (int16 logits).
    experts : int, 2..64
    k : int, 1..min(experts, 4)
    max_tokens : int, 1..4096

    Members
    -------
    w : In(stream.Signature(unsigned(config.bus_width)))
        Gate matrix images (one per frame; the task's gate), as the linear kernel's.
        Each must be ``D -> experts`` with ``bits=16``.
    x : In(stream.Signature(x_layout(config.pi)))
        A frame's token rows, tokens ``0 .. n-1`` in order, ``last`` on the frame's
        final beat.
    o_experts, o_tokens : Out(...)
        As :class:`rtl.dispatch.Dispatcher`'s.

    Throughput: the slowest stage: the kernel's ``ceil(D / PI)`` x beats per token
    or the softmax unit's row period (:func:`rtl.softmax.exp_cycles`: ``E / L``
    cycles for rows of 16 beats or more, else the divider's pace, about 10).
    Backpressure: every stream may stall. Cycle count: the unit models composed
    (:func:`exp_cycles`, an estimate: the kernel's bursts of ``T`` tokens are not
    modelled); measured 0 to 3 % above it.

    Tested: E = 16 (PO 16, T 2), E = 64 (PO 16, T 1), E = 4 (PO 4); k 1..4; frames of
    two tasks' gate matrices back to back; random gaps and backpressure.
    """

    def __init__(self, config, experts, k, max_tokens):
        with validating(self):
            if not isinstance(config, LinearConfig):
                raise TypeError(f"config must be a LinearConfig, not {config!r}")
            if config.out_width != 16:
                raise ValueError(f"config.out_width must be 16 (int16 gate logits), "
                                 f"not {config.out_width}")
            lanes = lanes_for(config, experts)
            if experts > config.po and (experts % config.po or config.t != 1):
                raise ValueError(f"experts ({experts}) above config.po ({config.po}) must be "
                                 f"a multiple of it with config.t = 1, not t = {config.t}")
            topk._check(experts, k, lanes)
            dispatch._check(experts, k, max_tokens)
        self._config, self._experts, self._k, self._max_tokens = config, experts, k, max_tokens
        self._lanes = lanes
        super().__init__({
            "w": In(stream.Signature(config.bus_width)),
            "x": In(stream.Signature(x_layout(config.pi))),
            "o_experts": Out(stream.Signature(dispatch.experts_layout(experts, max_tokens))),
            "o_tokens": Out(stream.Signature(dispatch.tokens_layout(experts))),
        })

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        E, k, L = self._experts, self._k, self._lanes
        m.submodules.gemv = gemv = LinearKernel(self._config)
        m.submodules.softmax = soft = SoftmaxUnit(E, L, "probs")
        m.submodules.topk = sel = topk.TopK(E, k, L)
        m.submodules.dispatch = queues = dispatch.Dispatcher(E, k, self._max_tokens)
        side_layout = data.StructLayout({
            "u": data.ArrayLayout(signed(topk.LOGIT_BITS), L), "token": TOKEN_BITS, "last": 1})
        m.submodules.side = side = fifo.SyncFIFOBuffered(
            width=side_layout.size, depth=soft.slots * (E // L) + _SOFTMAX_TAIL)
        wiring.connect(m, wiring.flipped(self.w), gemv.w)
        wiring.connect(m, wiring.flipped(self.x), gemv.x)

        # Fork: each logit beat goes to the softmax and to the side FIFO at once.
        y = gemv.y
        w_side = side_layout(side.w_data)
        m.d.comb += [
            y.ready.eq(soft.i.ready & side.w_rdy),
            soft.i.valid.eq(y.valid & side.w_rdy),
            side.w_en.eq(y.valid & soft.i.ready),
            w_side.token.eq(y.payload.token),
            w_side.last.eq(y.payload.last),
        ]
        # A row is one beat (E <= PO) or the folds 0 .. E/PO - 1 of one token (T = 1).
        m.d.comb += soft.i.payload.last.eq(y.payload.fold == E // L - 1)
        for lane in range(L):
            m.d.comb += [soft.i.payload.data[lane].eq(y.payload.data[lane]),
                         w_side.u[lane].eq(y.payload.data[lane])]

        # Join: a probability beat and its logits (always there: written together).
        r_side = side_layout(side.r_data)
        m.d.comb += [
            sel.i.valid.eq(soft.o.valid & side.r_rdy),
            soft.o.ready.eq(sel.i.ready & side.r_rdy),
            side.r_en.eq(sel.i.ready & soft.o.valid),
            sel.i.payload.u.eq(r_side.u),
            sel.i.payload.p.eq(soft.o.payload.data),
            sel.i.payload.token.eq(r_side.token),
            sel.i.payload.last.eq(r_side.last),
        ]
        wiring.connect(m, sel.o, queues.i)
        wiring.connect(m, queues.o_experts, wiring.flipped(self.o_experts))
        wiring.connect(m, queues.o_tokens, wiring.flipped(self.o_tokens))
        return m


def exp_cycles(config, experts, k, d_in, frames):
    """Estimated cycles from cycle 0 to the last ``o_tokens`` transfer, sources at full rate
    (each frame's gate image, then its ``frames[f]`` token rows) and sinks always ready.

    The unit models compose along the slower of two chains: the softmax unit fed
    back to back from the first logit beat on (:func:`rtl.softmax.exp_cycles`,
    softmax-bound, the usual case), or the kernel's last logit beat
    (:func:`rtl.linear.exp_cycles`) plus one row through the softmax unit. Then
    TopK's two stages, the dispatcher's ``k`` appends of the last token, its read
    start and the last frame's ``k * tokens`` entries.
    """
    lanes = lanes_for(config, experts)
    beats = experts // lanes
    jobs = [(d_in, experts, n) for n in frames]
    first_y = linear_cycles(config, [(d_in, experts, 1)]) - beats
    last_y = linear_cycles(config, jobs) - 1
    rows = [experts] * sum(frames)
    soft_last = max(first_y + softmax_cycles(rows, lanes, "probs") - 1,
                    last_y + softmax_cycles([experts], lanes, "probs") - beats)
    return soft_last + topk.PIPELINE_CYCLES + k + 1 + k * frames[-1]


def route_cycles(config, experts, k, d_in, tokens):
    """Estimated cycles from the first ``x`` beat to the last queue append, inclusive, for
    one frame of ``tokens`` rows with the gate matrix already loaded: :func:`exp_cycles`'s
    chains from the first ``x`` beat, without the read-out of the queues."""
    lanes = lanes_for(config, experts)
    beats = experts // lanes
    kb, nb = -(-d_in // config.pi), -(-experts // config.po)
    first_y = batch_cycles(config, kb, nb, 1) - beats
    last_y = batch_cycles(config, kb, nb, tokens) - 1
    soft_last = max(first_y + softmax_cycles([experts] * tokens, lanes, "probs") - 1,
                    last_y + softmax_cycles([experts], lanes, "probs") - beats)
    return soft_last + topk.PIPELINE_CYCLES + k
