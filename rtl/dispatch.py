"""Per-expert token queues of a frame, double-buffered, read out in ``golden.moe.dispatch`` order.

The unit takes the :class:`rtl.topk.TopK` beats of a frame (one per token, tokens
ascending), appends each ``(token, score)`` to the queue of each of the token's ``k``
experts, and once the frame's last token is in, reads the frame out on two streams:

* ``o_experts``: the active experts ascending, each with its queue length (what the
  expert-weight fetcher needs first: fc1/fc2 images in this order);
* ``o_tokens``: each active expert's queue, experts ascending, tokens ascending, with
  their Q0.8 scores (what the token gather feeds to the linear kernel; ``last`` ends
  an expert's queue, i.e. a linear-kernel batch, ``end`` the frame).

Both follow ``golden.moe.dispatch`` exactly. The streams are independent, so a
consumer may take the whole list first or interleave the two.

Queue memory: a shared pool of linked lists, two banks (double buffer)::

    bank b: slot 0 .. E-1            the first entry of expert e's queue is slot e
            slot E .. E + k*N - 1    one per appended entry (allocated in order)
    entry = {token, score, next}

Appending ``(t, s)`` to expert ``e`` writes ``{t, s, next=free}`` into the slot
``tail[e]`` (reserved beforehand, empty) and reserves ``free`` as the new
``tail[e]``: one write per entry, no pointer patching, one write port. The
read-out follows ``next`` from slot ``e``: the BRAM's registered output feeds the
next address, one entry per cycle.

Why a pool and not ``E x N`` fixed queues: a frame holds exactly ``k * N`` entries,
so a bank is ``E + k*N`` entries of ``bits(N) + 8 + bits(E + k*N)`` bits; fixed
regions need ``E * N`` entries because any expert may receive every token. For
M3ViT-tiny (E = 16, k = 2, N = 129) both banks are 548 x 25 bits = 13.7 kbit
against 2 x 2064 x 16 = 66 kbit for fixed queues; at E = 64, k = 4, 1160 x 26 bits
= 30 kbit against 264 kbit. Yosys maps the pool to 1 (E = 16) and 1.5 (E = 64)
RAMB36 on UltraScale+, 2 and 3 DP16KD on ECP5; fixed queues would take 2 and 8
RAMB36. The pool grows with ``k``, fixed queues with ``E``.

Double buffering: frame ``f + 1`` fills one bank while frame ``f`` is read out of
the other; frame ``f + 2`` waits for ``f``'s bank, which is free again once both
read-out streams have delivered their ``end`` beat.

Per-expert state: an active-expert mask per bank (``E`` flip-flops), the queue
lengths of both banks and the filling bank's tails in asynchronous-read LUT RAM
(``2E`` and ``E`` words). A memory word counts only while its expert's flag is
set (active bit, or a tail flag), so starting or releasing a bank clears ``E``
flip-flops instead of ``E`` words, and the memories need no reset.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden.moe import TOPK_MAX

from .linear import SCORE_BITS, TOKEN_BITS
from .params import check_int, validating
from .topk import MAX_EXPERTS
from .topk import out_layout as topk_layout

__all__ = ["MAX_TOKENS", "in_layout", "experts_layout", "tokens_layout", "Dispatcher",
           "pool_entries", "exp_cycles"]

#: Largest frame (tokens); M3ViT-tiny has 129, ViT at 512 x 512 has 1025.
MAX_TOKENS = 4096


def in_layout(experts, k):
    """The input beat: a :class:`rtl.topk.TopK` output beat."""
    return topk_layout(experts, k)


def experts_layout(experts, max_tokens):
    """One ``o_experts`` beat: an active expert, its queue length; ``end`` on the frame's last."""
    return data.StructLayout({"expert": range(experts), "count": range(max_tokens + 1), "end": 1})


def tokens_layout(experts):
    """One ``o_tokens`` beat: a queue entry; ``first``/``last`` bound the expert's queue,
    ``end`` is the frame's final entry."""
    return data.StructLayout({
        "token": TOKEN_BITS, "score": SCORE_BITS, "expert": range(experts),
        "first": 1, "last": 1, "end": 1,
    })


def pool_entries(experts, k, max_tokens):
    """Entries of one pool bank: a reserved head per expert plus one per appended entry."""
    return experts + k * max_tokens


def _check(experts, k, max_tokens):
    check_int("experts", experts, 2, MAX_EXPERTS)
    check_int("k", k, 1, min(experts, TOPK_MAX))
    check_int("max_tokens", max_tokens, 1, MAX_TOKENS)


def _lowest(m, mask, width, name):
    """``(one-hot lowest set bit, its index, whether another bit is set)`` of ``mask``."""
    low = Signal(width, name=f"{name}_low")
    index = Signal(range(width), name=f"{name}_index")
    more = Signal(name=f"{name}_more")
    m.d.comb += [
        low.eq(mask & (~mask + 1)),                # two's complement: a carry chain
        more.eq((mask & (mask - 1)) != 0),
    ]
    for bit in range(max(1, ceil_log2(width))):   # encode the one-hot: an OR per index bit
        m.d.comb += index[bit].eq(reduce(or_, [low[e] for e in range(width) if e >> bit & 1]))
    return low, index, more


class Dispatcher(wiring.Component):
    """Per-expert token queues with a double-buffered, ordered read-out (module docstring).

    Parameters
    ----------
    experts : int, 2..64
    k : int, 1..min(experts, 4)
        Experts per token (entries per input beat).
    max_tokens : int, 1..4096
        Largest frame; sets the pool size (:func:`pool_entries`).

    Members
    -------
    i : In(stream.Signature(in_layout(experts, k)))
        One beat per token, tokens ascending, ``k`` distinct experts; ``last`` on the
        frame's final token. A frame has 1..``max_tokens`` tokens (more overwrite the
        pool: undefined).
    o_experts : Out(stream.Signature(experts_layout(experts, max_tokens)))
        Per frame, the active experts ascending with their queue lengths.
    o_tokens : Out(stream.Signature(tokens_layout(experts)))
        Per frame, ``k * tokens`` queue entries: experts ascending, tokens ascending.

    Throughput: one queue entry per cycle in (a token every ``k`` cycles: ``i`` is
    ready on the token's ``k``-th write) and one per cycle out, overlapped across
    frames by the two banks. The read-out of a frame starts the cycle after its
    last write; its first ``o_tokens`` beat comes a cycle later (BRAM read).
    Upstream, the softmax unit needs about 10 cycles per row at least (its divider)
    and TopK ``E / lanes``, so ``k <= 4`` cycles per token keep up unless TopK runs
    with ``lanes > E / k`` behind a faster source.

    Backpressure: either output may stall at any time; ``i`` stalls while both banks
    hold frames. Cycle model: :func:`exp_cycles`.

    Tested: E in {4, 16, 64}, k 1..4, 1..129 tokens, one expert taking every token,
    empty experts, frames back to back with different routing, random gaps and
    backpressure on all three streams.
    """

    def __init__(self, experts, k, max_tokens):
        with validating(self):
            _check(experts, k, max_tokens)
        self._experts, self._k, self._max_tokens = experts, k, max_tokens
        super().__init__({
            "i": In(stream.Signature(in_layout(experts, k))),
            "o_experts": Out(stream.Signature(experts_layout(experts, max_tokens))),
            "o_tokens": Out(stream.Signature(tokens_layout(experts))),
        })

    @property
    def experts(self):
        return self._experts

    @property
    def k(self):
        return self._k

    @property
    def max_tokens(self):
        return self._max_tokens

    @property
    def entry_layout(self):
        """One pool entry."""
        depth = pool_entries(self._experts, self._k, self._max_tokens)
        return data.StructLayout({
            "token": range(self._max_tokens), "score": SCORE_BITS, "next": range(depth)})

    def elaborate(self, platform):
        m = Module()
        E, k, N = self._experts, self._k, self._max_tokens
        depth = pool_entries(E, k, N)
        m.submodules.pool = pool = memory.Memory(
            shape=self.entry_layout, depth=2 * depth, init=[])
        wr = pool.write_port()
        rd = pool.read_port()

        def base(bank):
            return Mux(bank, depth, 0)

        full = Signal(2)                      # bank holds a complete frame, not yet read out
        active = [Signal(E, name=f"active_{b}") for b in range(2)]
        # Per-expert state lives in small asynchronous-read memories (LUT RAM), made valid by
        # a bit per expert, so a frame starts or ends by clearing E flip-flops: queue lengths
        # (both banks, entry bank * E + e; valid = active) and tails (valid = tail_set).
        m.submodules.counts = counts = memory.Memory(shape=range(N + 1), depth=2 * E, init=[])
        m.submodules.tails = tails = memory.Memory(shape=range(depth), depth=E, init=[])

        def count_of(bank, e, name):
            port = counts.read_port(domain="comb")
            m.d.comb += port.addr.eq(Mux(bank, E, 0) + e)
            value = Signal(range(N + 1), name=name)
            m.d.comb += value.eq(Mux((Mux(bank, active[1], active[0]) >> e)[0], port.data, 0))
            return value

        # ---- fill: k appends per token, one per cycle -----------------------------------
        fill = Signal()                       # the bank being filled
        slot = Signal(range(k))               # which of the token's k experts
        tail_set = Signal(E)                  # tails[e] is valid; else the tail is slot e
        free = Signal(range(depth + 1), init=E)
        expert = self.i.payload.idx[slot]
        can_fill = ~full.bit_select(fill, 1)
        append = self.i.valid & can_fill
        tail_rd, tail_wr = tails.read_port(domain="comb"), tails.write_port()
        count_wr = counts.write_port()
        tail = Mux((tail_set >> expert)[0], tail_rd.data, expert)
        m.d.comb += [
            tail_rd.addr.eq(expert), tail_wr.addr.eq(expert), tail_wr.data.eq(free),
            tail_wr.en.eq(append),
            count_wr.addr.eq(Mux(fill, E, 0) + expert),
            count_wr.data.eq(count_of(fill, expert, "fill_count") + 1),
            count_wr.en.eq(append),
            self.i.ready.eq(can_fill & (slot == k - 1)),
            wr.addr.eq(base(fill) + tail),
            wr.data.token.eq(self.i.payload.token),
            wr.data.score.eq(self.i.payload.p[slot]),
            wr.data.next.eq(free),
            wr.en.eq(append),
        ]
        with m.If(append):
            m.d.sync += [tail_set.bit_select(expert, 1).eq(1), free.eq(free + 1),
                         slot.eq(Mux(slot == k - 1, 0, slot + 1))]
            for b in range(2):
                with m.If(fill == b):
                    m.d.sync += active[b].bit_select(expert, 1).eq(1)
            with m.If((slot == k - 1) & self.i.payload.last):
                # The frame is in: hand the bank to the read-out, start the other one.
                m.d.sync += [full.bit_select(fill, 1).eq(1), fill.eq(~fill),
                             tail_set.eq(0), free.eq(E)]

        # ---- read-out of bank `drain` -----------------------------------------------------
        drain = Signal()
        ready = full.bit_select(drain, 1)
        d_active = Mux(drain, active[1], active[0])

        # o_experts: straight from the registers and the count memory.
        l_taken = Signal(E)                   # experts already listed
        l_low, l_expert, l_more = _lowest(m, d_active & ~l_taken, E, "list")
        l_done = Signal()
        m.d.comb += [
            self.o_experts.valid.eq(ready & ((d_active & ~l_taken) != 0)),
            self.o_experts.payload.expert.eq(l_expert),
            self.o_experts.payload.count.eq(count_of(drain, l_expert, "list_count")),
            self.o_experts.payload.end.eq(~l_more),
        ]
        l_send = self.o_experts.valid & self.o_experts.ready
        with m.If(l_send):
            m.d.sync += l_taken.eq(l_taken | l_low)

        # o_tokens: follow each queue's links; the BRAM output is the output register.
        t_taken = Signal(E)                   # experts whose queue is fully issued
        t_left = d_active & ~t_taken
        t_low, t_expert, t_more = _lowest(m, t_left, E, "queue")
        pos = Signal(range(N))                # entry of the current queue being issued
        at_last = pos == count_of(drain, t_expert, "queue_count") - 1
        o_valid = Signal()
        meta = Signal(data.StructLayout({"expert": range(E), "first": 1, "last": 1, "end": 1}))
        en = ~o_valid | self.o_tokens.ready
        issue = en & ready & (t_left != 0)
        m.d.comb += [
            rd.addr.eq(base(drain) + Mux(pos == 0, t_expert, rd.data.next)),
            rd.en.eq(en),
        ]
        with m.If(en):
            m.d.sync += [
                o_valid.eq(issue),
                meta.expert.eq(t_expert), meta.first.eq(pos == 0),
                meta.last.eq(at_last), meta.end.eq(at_last & ~t_more),
            ]
        with m.If(issue):
            m.d.sync += pos.eq(Mux(at_last, 0, pos + 1))
            with m.If(at_last):
                m.d.sync += t_taken.eq(t_taken | t_low)
        m.d.comb += [
            self.o_tokens.valid.eq(o_valid),
            self.o_tokens.payload.token.eq(rd.data.token),
            self.o_tokens.payload.score.eq(rd.data.score),
            self.o_tokens.payload.expert.eq(meta.expert),
            self.o_tokens.payload.first.eq(meta.first),
            self.o_tokens.payload.last.eq(meta.last),
            self.o_tokens.payload.end.eq(meta.end),
        ]
        t_send_end = o_valid & self.o_tokens.ready & meta.end
        t_done = Signal()

        # ---- release: both streams have delivered the frame -------------------------------
        t_fin = t_done | t_send_end
        l_fin = l_done | (l_send & ~l_more)
        with m.If(t_fin & l_fin):
            m.d.sync += [full.bit_select(drain, 1).eq(0), drain.eq(~drain),
                         t_taken.eq(0), l_taken.eq(0), t_done.eq(0), l_done.eq(0)]
            for b in range(2):
                with m.If(drain == b):
                    m.d.sync += active[b].eq(0)
        with m.Else():
            m.d.sync += [t_done.eq(t_fin), l_done.eq(l_fin)]
        return m


def exp_cycles(k, frames):
    """Cycles from the first cycle ``i`` offers a beat to the last ``o_tokens`` transfer.

    ``frames`` lists each frame's token count; ``i`` offers every beat as soon as it
    may (back to back, frames without gaps) and both outputs are always ready.
    The recurrences follow the hardware: a frame's ``k * tokens`` appends take one
    cycle each, once its bank was released by the frame two before; its read-out
    starts the cycle after both its last append and the previous frame's release;
    ``o_tokens`` leaves one entry per cycle from the cycle after (the list on
    ``o_experts`` is never longer, so it is done first); the bank is released in the
    cycle of the final ``o_tokens`` transfer.
    """
    fill_end, release = -1, []
    for f, tokens in enumerate(frames):
        start = max(fill_end + 1, release[f - 2] + 1 if f >= 2 else 0)
        fill_end = start + k * tokens - 1
        read = max(fill_end + 1, release[f - 1] + 1 if f >= 1 else 0)
        release.append(read + k * tokens)
    return release[-1] + 1
