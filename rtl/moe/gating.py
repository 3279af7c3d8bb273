"""Expert gating datapath: softmax over the experts, top-k, per-expert token queues.

The gate GEMV itself (``D -> E``, per task: the task id selects which gate matrix
image is sent) runs on the linear kernel (:mod:`rtl.compute.linear`), whose per-channel
requantizer writes the int16 log2-domain logits ``u`` (``bits=16``). Per token,
its ``E`` logits stream into this unit, one per cycle::

    i (u, token by token) --+--> TopK (k sorted registers, strict >: ties keep the lower id)
                            +--> SoftmaxUnit(E, probs) --> pick p of the k chosen experts
                                                             |
                     queues[E][max_tokens] {token, score} <--+  (k writes per token)
                                                             |
    o: after the frame's last token, every active expert's queue, experts ascending,
       tokens ascending: {expert, token, score, count (queue length), first, last}

exactly ``golden.moe.topk``, ``golden.softmax.softmax_u8`` and ``golden.moe.dispatch``.
The queue memory has one bank: the next frame's logits wait until the read-out ends.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.moe import TOPK_MAX

from ..compute.constmul import times
from ..compute.linear import SCORE_BITS, TOKEN_BITS
from ..compute.softmax import SoftmaxUnit
from ..compute.softmax import exp_cycles as softmax_cycles
from ..params import check_int, validating

__all__ = ["in_layout", "out_layout", "Gating", "exp_cycles"]

in_layout = data.StructLayout({"u": signed(16), "last": 1})


def out_layout(experts):
    """One queue entry; ``count`` and ``first`` announce an expert, ``last`` ends the frame."""
    return data.StructLayout({
        "expert": range(experts), "token": TOKEN_BITS, "score": SCORE_BITS,
        "count": TOKEN_BITS, "first": 1, "last": 1,
    })


class Gating(wiring.Component):
    """Top-k gating and token dispatch for ``experts`` experts.

    Parameters
    ----------
    experts : int, 2..64
    k : int, 1..min(experts, 4)
    max_tokens : int, 1..4096
        Tokens per frame (queue capacity per expert).

    Members
    -------
    i : In(stream.Signature(in_layout))
        ``experts`` logits per token, expert 0 first; ``last`` on the frame's final logit.
    o : Out(stream.Signature(out_layout(experts)))
        The frame's queues (see the module docstring); ``k * tokens`` beats.

    Throughput: the softmax unit's row pace (:func:`rtl.compute.softmax.exp_cycles`): a token
    every ``E`` cycles for ``E >= 14``, else 4 tokens every ``max(40, 3E + 14)``; the
    read-out one entry per cycle plus one cycle per expert scanned.
    Backpressure: ``o`` may stall; ``i`` stalls while the read-out runs.
    Cycle model: :func:`exp_cycles`. Tested: E in {4, 16, 64}, k 1..4, ties, one
    expert taking every token, empty experts, frames back to back.
    """

    def __init__(self, experts, k, max_tokens):
        with validating(self):
            check_int("experts", experts, 2, 64)
            check_int("k", k, 1, min(experts, TOPK_MAX))
            check_int("max_tokens", max_tokens, 1, 4096)
        self._experts, self._k, self._max_tokens = experts, k, max_tokens
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout(experts))),
        })

    def elaborate(self, platform):
        m = Module()
        E, k, n_max = self._experts, self._k, self._max_tokens
        m.submodules.softmax = softmax = SoftmaxUnit(E, 1, "probs")

        # ---- fork the logits to the top-k registers and the softmax --------------------
        readout = Signal()
        expert = Signal(range(E))
        top_val = [Signal(signed(16), name=f"top_val_{j}") for j in range(k)]
        top_idx = [Signal(range(E), name=f"top_idx_{j}") for j in range(k)]
        chosen = data.StructLayout({"idx": data.ArrayLayout(range(E), k), "last": 1})
        # Top-k results wait here for their row's probabilities (the softmax lags by rows).
        pending = [Signal(chosen, name=f"pending_{n}") for n in range(4)]
        pend_w, pend_r = Signal(range(4)), Signal(range(4))
        pend_count = Signal(range(5))
        row_end = expert == E - 1
        take = self.i.valid & self.i.ready
        m.d.comb += [
            self.i.ready.eq(~readout & softmax.i.ready & ~(row_end & (pend_count == 4))),
            softmax.i.valid.eq(self.i.valid & self.i.ready),
            softmax.i.payload.data[0].eq(self.i.payload.u),
            softmax.i.payload.last.eq(row_end),
        ]
        u = self.i.payload.u
        # Insert (u, expert): it goes below every kept entry that is >= u.
        above = [Signal(name=f"above_{j}") for j in range(k)]
        for j in range(k):
            m.d.comb += above[j].eq((expert > j) & (top_val[j] >= u))
        new_val = [Signal(signed(16), name=f"new_val_{j}") for j in range(k)]
        new_idx = [Signal(range(E), name=f"new_idx_{j}") for j in range(k)]
        for j in range(k):
            below = (expert > j - 1) & ~above[j - 1] if j else 0
            m.d.comb += [
                new_val[j].eq(Mux(above[j], top_val[j], Mux(below, top_val[j - 1] if j else 0, u))),
                new_idx[j].eq(Mux(above[j], top_idx[j], Mux(below, top_idx[j - 1] if j else 0, expert))),
            ]
        pend_in = Signal()
        with m.If(take):
            m.d.sync += [expert.eq(Mux(row_end, 0, expert + 1))]
            m.d.sync += [top_val[j].eq(new_val[j]) for j in range(k)]
            m.d.sync += [top_idx[j].eq(new_idx[j]) for j in range(k)]
            with m.If(row_end):
                m.d.comb += pend_in.eq(1)
                with m.Switch(pend_w):
                    for n in range(4):
                        with m.Case(n):
                            m.d.sync += [pending[n].idx[j].eq(new_idx[j]) for j in range(k)]
                            m.d.sync += pending[n].last.eq(self.i.payload.last)
                m.d.sync += pend_w.eq(pend_w + 1)

        # ---- pick the chosen experts' probabilities, write the queues ------------------
        m.submodules.queues = queues = memory.Memory(
            shape=data.StructLayout({"token": TOKEN_BITS, "score": SCORE_BITS}),
            depth=E * n_max, init=[])
        q_wr = queues.write_port()
        q_rd = queues.read_port()
        count = Signal(data.ArrayLayout(TOKEN_BITS, E))
        head = Signal(chosen)
        m.d.comb += head.eq(Cat(*(p.as_value() for p in pending)).word_select(pend_r, chosen.size))
        p_expert = Signal(range(E))
        p_score = Signal(data.ArrayLayout(SCORE_BITS, k))
        token = Signal(TOKEN_BITS)
        writing = Signal()                          # k queue writes of the finished token
        w_slot = Signal(range(k))
        frame_done = Signal()
        pend_out = Signal()
        # A finished token's choices and scores are copied for its k queue writes, so the
        # softmax keeps streaming the next token's probabilities meanwhile (not past a frame end).
        w_idx = Signal(data.ArrayLayout(range(E), k))
        w_score = Signal(data.ArrayLayout(SCORE_BITS, k))
        w_last = Signal()
        m.d.comb += softmax.o.ready.eq(~(writing & w_last) & ~readout & (pend_count > 0))
        w_expert = w_idx[w_slot]
        m.d.comb += [
            q_wr.addr.eq(times(w_expert, n_max) + count[w_expert]),
            q_wr.data.token.eq(token),
            q_wr.data.score.eq(w_score[w_slot]),
            q_wr.en.eq(writing),
        ]
        with m.If(writing):
            m.d.sync += [count[w_expert].eq(count[w_expert] + 1), w_slot.eq(w_slot + 1)]
            with m.If(w_slot == k - 1):
                m.d.sync += [writing.eq(0), token.eq(Mux(w_last, 0, token + 1))]
                with m.If(w_last):
                    m.d.comb += frame_done.eq(1)
        with m.If(softmax.o.valid & softmax.o.ready):
            p = softmax.o.payload.data[0]
            for j in range(k):
                with m.If(head.idx[j] == p_expert):
                    m.d.sync += p_score[j].eq(p)
            m.d.sync += p_expert.eq(Mux(p_expert == E - 1, 0, p_expert + 1))
            with m.If(p_expert == E - 1):
                # After the writes above: a copy taken in a write's last cycle starts the next.
                m.d.comb += pend_out.eq(1)
                m.d.sync += [writing.eq(1), w_slot.eq(0), w_idx.eq(head.idx), w_last.eq(head.last),
                             pend_r.eq(pend_r + 1)]
                m.d.sync += [w_score[j].eq(Mux(head.idx[j] == p_expert, p, p_score[j]))
                             for j in range(k)]
        m.d.sync += pend_count.eq(pend_count + pend_in - pend_out)

        # ---- read-out: experts ascending, each queue in order (stall-all pipeline) -------
        en = ~self.o.valid | self.o.ready
        r_expert = Signal(range(E + 1))
        r_entry = Signal(TOKEN_BITS)
        r_valid = Signal()
        r_info = Signal(out_layout(E))
        o_info = Signal(out_layout(E))
        o_valid = Signal()
        r_count = count[r_expert[:max(1, (E - 1).bit_length())]]
        has_more = r_entry < r_count
        issue = readout & en & (r_expert < E) & has_more
        last_expert = Signal()
        # The last beat of the frame: no later expert has tokens.
        later = Signal(E + 1)
        for e in range(E):
            m.d.comb += later[e].eq(later[e + 1] | (count[e] != 0))
        m.d.comb += last_expert.eq(~later.bit_select(r_expert + 1, 1))
        m.d.comb += [q_rd.addr.eq(times(r_expert, n_max) + r_entry), q_rd.en.eq(en)]
        with m.If(frame_done):
            m.d.sync += [readout.eq(1), r_expert.eq(0), r_entry.eq(0)]
        with m.If(readout & en):
            with m.If((r_expert < E) & has_more):
                m.d.sync += r_entry.eq(r_entry + 1)
                with m.If(r_entry + 1 == r_count):
                    m.d.sync += [r_expert.eq(r_expert + 1), r_entry.eq(0)]
            with m.Elif(r_expert < E):
                m.d.sync += r_expert.eq(r_expert + 1)         # an empty expert: one scan cycle
        with m.If(en):
            m.d.sync += [
                r_valid.eq(issue), o_valid.eq(r_valid),
                r_info.expert.eq(r_expert), r_info.count.eq(r_count),
                r_info.first.eq(r_entry == 0),
                r_info.last.eq((r_entry + 1 == r_count) & last_expert),
                o_info.eq(r_info),
                o_info.token.eq(q_rd.data.token), o_info.score.eq(q_rd.data.score),
            ]
        # The read-out ends when its final beat leaves; the queues are empty again.
        with m.If(o_valid & self.o.ready & o_info.last):
            m.d.sync += readout.eq(0)
            m.d.sync += [count[e].eq(0) for e in range(E)]
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_info)]
        return m


def exp_cycles(experts, k, lengths):
    """Cycles from the first ``i`` beat to the last ``o`` beat for one frame at full rate.

    ``lengths`` are the frame's queue lengths per expert (their sum is ``k * tokens``).
    The logits pass through the softmax unit; the last token's probabilities are
    picked, its ``k`` queue writes follow, then the read-out scans the experts
    (one cycle per empty expert, one per queue entry) and its beats leave 2 cycles
    after they are issued.
    """
    tokens = sum(lengths) // k
    softmax_done = softmax_cycles([experts] * tokens, 1, "probs")      # last probability taken
    empty = sum(1 for n in lengths[:max(e for e, n in enumerate(lengths) if n) + 1] if n == 0)
    return softmax_done + k + empty + sum(lengths) + 2
