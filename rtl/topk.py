"""Top-k expert selection over rows of gate logits, ``lanes`` experts per beat.

Per token, the row of ``E`` int16 log2-domain gate logits ``u`` streams in, ``lanes``
experts per beat, expert 0 first, together with the row's Q0.8 probabilities ``p``
(``golden.softmax.softmax_u8``, lane-aligned with ``u``). The unit keeps the ``k``
best (``u``, ``p``, expert) of the row in sorted registers and, at the row end,
emits the token's chosen experts, largest ``u`` first, with their probabilities::

    i {u[L], p[L], token, last}
      |
      s1: rank the L lanes among themselves, keep the best m = min(k, L)   (register)
      |
      s2: merge the m sorted candidates into the k sorted registers         (register)
      |       (row end: the merged list goes to the output register)
      o {token, idx[k], p[k], last}

The order is ``golden.moe.topk``'s: larger ``u`` first; **a tie goes to the lower
expert id**. Lane ``a`` beats lane ``b`` of the same beat if ``u_a > u_b`` or
``u_a == u_b`` and ``a < b``; a kept register (an earlier beat, so a lower id) beats
a candidate unless the candidate is strictly larger (the reference hardware's
strict-``>`` insertion sort). Ranks are counts of such wins, so the merge is one
level of ``k x m`` comparators whatever ``E`` is, and a beat is ``L (L - 1) / 2``
comparators: no comparator chain grows with ``L`` or ``k``.

Why ``u`` and not ``p``: the softmax is monotonic but ``p`` is quantized, so two
experts with different ``u`` may share a ``p``; the spec's order is that of ``u``.
``p`` only rides along with its expert.

Framing: beats are counted (``E / L`` per row), so rows need no flag; ``last`` marks
the frame's final beat (as the linear kernel's ``last`` ends a batch) and comes out
on the frame's final token. ``token`` is sampled on the row's final beat.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.moe import TOPK_MAX

from .linear import SCORE_BITS, TOKEN_BITS
from .params import check_int, validating

__all__ = ["LOGIT_BITS", "MAX_EXPERTS", "MAX_LANES", "PIPELINE_CYCLES", "in_layout",
           "out_layout", "TopK", "exp_cycles"]

#: Gate logits are int16 in the log2 domain (``golden.softmax``).
LOGIT_BITS = 16
#: Largest number of experts (the reference model has 16).
MAX_EXPERTS = 64
#: Largest number of lanes: a beat costs ``L (L - 1) / 2`` comparators.
MAX_LANES = 16
#: Cycles from the row's final ``i`` transfer to its ``o`` beat (s1, s2 registers).
PIPELINE_CYCLES = 2


def in_layout(lanes):
    """One input beat: ``lanes`` logits and their probabilities; ``last`` ends the frame."""
    return data.StructLayout({
        "u": data.ArrayLayout(signed(LOGIT_BITS), lanes),
        "p": data.ArrayLayout(unsigned(SCORE_BITS), lanes),
        "token": TOKEN_BITS,
        "last": 1,
    })


def out_layout(experts, k):
    """One output beat per token: the chosen experts, best first, and their probabilities."""
    return data.StructLayout({
        "token": TOKEN_BITS,
        "idx": data.ArrayLayout(range(experts), k),
        "p": data.ArrayLayout(unsigned(SCORE_BITS), k),
        "last": 1,
    })


def _check(experts, k, lanes):
    check_int("experts", experts, 2, MAX_EXPERTS)
    check_int("k", k, 1, min(experts, TOPK_MAX))
    check_int("lanes", lanes, 1, min(experts, MAX_LANES))
    if experts % lanes:
        raise ValueError(f"lanes must divide experts ({experts}), not {lanes}")


def _select(m, items, ranks, position, layout, name):
    """The item whose rank is ``position`` (ranks are distinct), and whether there is one."""
    sel = [Signal(name=f"{name}_sel_{n}") for n in range(len(items))]
    for s, (valid, rank) in zip(sel, ranks):
        m.d.comb += s.eq(valid & (rank == position))
    out = Signal(layout, name=name)
    m.d.comb += out.eq(reduce(or_, [Mux(s, v.as_value(), 0) for s, v in zip(sel, items)]))
    return out, reduce(or_, sel)


class TopK(wiring.Component):
    """The ``k`` best of ``experts`` gate logits per token (see the module docstring).

    Parameters
    ----------
    experts : int, 2..64
        ``E``: logits per row (token).
    k : int, 1..min(E, 4)
        Experts chosen per token.
    lanes : int, 1..min(E, 16), divides ``E``
        Logits per beat.

    Members
    -------
    i : In(stream.Signature(in_layout(lanes)))
        ``E / lanes`` beats per token, experts ascending; ``p`` aligned with ``u``;
        ``token`` is read on the row's final beat, ``last`` on the frame's final beat.
    o : Out(stream.Signature(out_layout(experts, k)))
        One beat per token: ``idx[0..k-1]`` the chosen experts, largest ``u`` first
        (ties: lower id first), ``p[j]`` the probability of ``idx[j]``; ``last`` on
        the frame's final token.

    Latency: :data:`PIPELINE_CYCLES` = 2 cycles from a row's final ``i`` transfer to
    its ``o`` beat. Throughput: one beat (``lanes`` logits) per cycle, so a token every
    ``E / lanes`` cycles; :func:`exp_cycles`. Backpressure: ``o`` may stall at any
    time; ``i`` keeps flowing until the next row end finds the output register still
    full (one token of slack), then stalls with it.

    Tested: E in {4, 16, 64}, k 1..4, lanes 1..16, random logits, all-equal rows,
    ties among later ids, random gaps and backpressure.
    """

    def __init__(self, experts, k, lanes=1):
        with validating(self):
            _check(experts, k, lanes)
        self._experts, self._k, self._lanes = experts, k, lanes
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(experts, k))),
        })

    @property
    def experts(self):
        return self._experts

    @property
    def k(self):
        return self._k

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        E, k, L = self._experts, self._k, self._lanes
        beats, cands = E // L, min(k, L)
        entry = data.StructLayout({"u": signed(LOGIT_BITS), "p": unsigned(SCORE_BITS),
                                   "id": range(E)})

        # ---- s1: rank the lanes of the beat, keep the best `cands` -----------------------
        s1_valid = Signal()
        s1 = Signal(data.StructLayout({
            "c": data.ArrayLayout(entry, cands), "first": 1, "end": 1,
            "token": TOKEN_BITS, "last": 1,
        }))
        s2_take = Signal()
        beat = Signal(range(beats))
        m.d.comb += self.i.ready.eq(~s1_valid | s2_take)
        take = self.i.valid & self.i.ready

        u, p = self.i.payload.u, self.i.payload.p
        lane_items, lane_ranks = [], []
        for a in range(L):
            item = Signal(entry, name=f"lane_{a}")
            m.d.comb += [item.u.eq(u[a]), item.p.eq(p[a]), item.id.eq(beat * L + a)]
            # Lanes that beat lane a: larger, or equal with a lower id.
            wins = [(u[b] >= u[a]) if b < a else (u[b] > u[a]) for b in range(L) if b != a]
            rank = Signal(range(L), name=f"lane_rank_{a}")
            m.d.comb += rank.eq(sum(wins) if wins else 0)
            lane_items.append(item)
            lane_ranks.append((1, rank))
        beat_best = [_select(m, lane_items, lane_ranks, r, entry, f"beat_best_{r}")[0]
                     for r in range(cands)]
        with m.If(take):
            m.d.sync += [s1.c[r].eq(beat_best[r]) for r in range(cands)]
            m.d.sync += [
                s1.first.eq(beat == 0), s1.end.eq(beat == beats - 1),
                s1.token.eq(self.i.payload.token), s1.last.eq(self.i.payload.last),
                beat.eq(Mux(beat == beats - 1, 0, beat + 1)),
            ]
        with m.If(take):
            m.d.sync += s1_valid.eq(1)
        with m.Elif(s2_take):
            m.d.sync += s1_valid.eq(0)

        # ---- s2: merge the candidates into the k sorted registers ----------------------
        top = Signal(data.ArrayLayout(entry, k))
        top_valid = Signal(k)
        kept = Signal(k)                      # registers that belong to this row
        m.d.comb += kept.eq(Mux(s1.first, 0, top_valid))
        # larger[i][j]: candidate i strictly beats register j (a register wins a tie).
        larger = [[s1.c[i].u > top[j].u for j in range(k)] for i in range(cands)]
        ranks = []
        for j in range(k):
            rank = Signal(range(k + cands), name=f"top_rank_{j}")
            m.d.comb += rank.eq(j + sum(larger[i][j] for i in range(cands)))
            ranks.append((kept[j], rank))
        for i in range(cands):
            rank = Signal(range(k + cands), name=f"cand_rank_{i}")
            m.d.comb += rank.eq(i + sum(kept[j] & ~larger[i][j] for j in range(k)))
            ranks.append((1, rank))
        merged, merged_valid = [], []
        for r in range(k):
            # Only register j <= r or candidate i <= r can land in position r (rank >= index).
            regs, news = range(min(r + 1, k)), range(min(r + 1, cands))
            items = [top[j] for j in regs] + [s1.c[i] for i in news]
            options = [ranks[j] for j in regs] + [ranks[k + i] for i in news]
            best, valid = _select(m, items, options, r, entry, f"merged_{r}")
            merged.append(best)
            merged_valid.append(valid)

        # The row end needs the output register: free, or being read this cycle.
        o_free = ~self.o.valid | self.o.ready
        m.d.comb += s2_take.eq(s1_valid & (~s1.end | o_free))
        with m.If(s2_take):
            m.d.sync += [top[r].eq(merged[r]) for r in range(k)]
            m.d.sync += [top_valid[r].eq(merged_valid[r]) for r in range(k)]
        with m.If(s2_take & s1.end):
            m.d.sync += [self.o.payload.idx[r].eq(merged[r].id) for r in range(k)]
            m.d.sync += [self.o.payload.p[r].eq(merged[r].p) for r in range(k)]
            m.d.sync += [self.o.payload.token.eq(s1.token), self.o.payload.last.eq(s1.last),
                         self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def exp_cycles(experts, lanes, tokens):
    """Cycles from the first ``i`` transfer to the last ``o`` transfer, inclusive.

    ``i`` offers a beat every cycle and ``o`` is always ready: ``tokens * E / lanes``
    beats, then :data:`PIPELINE_CYCLES`. Frames may follow each other without a gap.
    """
    return tokens * (experts // lanes) + PIPELINE_CYCLES
