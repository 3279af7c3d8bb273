"""MoE combine: score-weighted scatter-accumulate of expert outputs into token rows.

The linear kernel runs each active expert's fc2 over that expert's token queue
and emits, per (token, output fold), ``PO`` int16 values at the residual scale
together with the token's gate score (Q0.8). This unit adds ``score * y`` into
an on-chip accumulator row of that token; once every expert of the layer has
passed, a flush emits ``sat16(round_shift(acc, 8))`` for tokens ``0..n-1`` and
clears the accumulators for the next layer, exactly ``golden.moe.combine``::

    i (kernel y beats) --> read acc[token, fold] --> + score * y --> write back
    flush {tokens, batches} --> (after `batches` batch ends on i) read, round, saturate --> o
                                                                   and write 0 back

Accumulators are 32-bit per lane: exact for up to 256 contributions of
``255 * 2**15`` per token (top-k needs at most 4).

After a reset the unit first clears every accumulator row, one per cycle
(``max_tokens * folds`` cycles), taking neither ``i`` nor a flush meanwhile: a reset in
the middle of a layer leaves partial sums that only that layer's flush would have
cleared, and the next frame would add onto them.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..compute.constmul import times
from ..compute.linear import DIM_BITS, SCORE_BITS, TOKEN_BITS, y_layout
from ..params import check_int, validating

__all__ = ["ACC_BITS", "flush_layout", "out_layout", "Combiner", "exp_cycles"]

#: Accumulator width per lane.
ACC_BITS = 32
#: The combined rows are int16 at the residual scale.
OUT_BITS = 16

flush_layout = data.StructLayout({"tokens": TOKEN_BITS, "batches": 8})


def out_layout(po):
    """One output beat: lanes ``fold*PO ..`` of token ``token``; ``last`` on the final beat."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(OUT_BITS), po),
        "token": TOKEN_BITS,
        "fold": DIM_BITS,
        "last": 1,
    })


class Combiner(wiring.Component):
    """Score-weighted accumulation of expert outputs, then one rounded read-out per layer.

    Parameters
    ----------
    max_tokens : int, 1..4096
        Accumulator rows (tokens per frame).
    dim : int, 1..4096
        Row width (the model dimension); ``folds = ceil(dim / po)`` beats per row.
    po : int, 1..64
        Lanes per beat (the linear kernel's output parallelism).

    Members
    -------
    i : In(stream.Signature(y_layout(po, 16)))
        The linear kernel's ``y`` beats of each expert's fc2; ``last`` ends an expert's batch.
        ``token < max_tokens`` and ``fold < folds`` are assumed (the kernel guarantees it
        for matrices of ``d_out <= dim``).
    flush : In(stream.Signature(flush_layout))
        ``{tokens, batches}``: once ``batches`` batch ends have been accumulated since the
        previous flush, emit rows ``0..tokens-1`` and clear them. ``batches = 0`` (a layer
        whose experts received no tokens) emits zeros at once.
    o : Out(stream.Signature(out_layout(po)))
        ``tokens * folds`` beats, token major; ``last`` on the final one.

    Throughput: one ``i`` beat per cycle (``i`` is ready whenever no flush is running);
    a flush emits one beat per cycle while ``o`` is ready. Latency: a flush's first
    beat leaves 2 cycles after it starts. Cycle model: :func:`exp_cycles`. After a reset,
    ``i`` and ``flush`` wait ``max_tokens * folds`` cycles while the rows are cleared
    (:attr:`clear_cycles`; the top's first combine comes long after a frame starts).
    Read-modify-write of the same row on consecutive cycles is exact (the read port
    is transparent to the write port).
    """

    def __init__(self, max_tokens, dim, po):
        with validating(self):
            check_int("max_tokens", max_tokens, 1, 4096)
            check_int("dim", dim, 1, 4096)
            check_int("po", po, 1, 64)
        self._max_tokens, self._dim, self._po = max_tokens, dim, po
        super().__init__({
            "i": In(stream.Signature(y_layout(po, OUT_BITS))),
            "flush": In(stream.Signature(flush_layout)),
            "o": Out(stream.Signature(out_layout(po))),
        })

    @property
    def folds(self):
        return -(-self._dim // self._po)

    @property
    def clear_cycles(self):
        """Cycles after a reset before ``i`` and ``flush`` are taken (the rows' clearing)."""
        return self._max_tokens * self.folds

    def elaborate(self, platform):
        m = Module()
        po, folds = self._po, self.folds
        row = data.ArrayLayout(signed(ACC_BITS), po)
        m.submodules.acc = acc = memory.Memory(shape=row, depth=self._max_tokens * folds, init=[])
        wr = acc.write_port()
        rd = acc.read_port(transparent_for=(wr,))

        # After a reset every row is cleared once, one per cycle (the module docstring).
        clearing = Signal(init=1)
        c_addr = Signal.like(wr.addr)
        with m.If(clearing):
            m.d.sync += c_addr.eq(c_addr + 1)
            with m.If(c_addr == self.clear_cycles - 1):
                m.d.sync += clearing.eq(0)

        flushing = Signal()
        seen = Signal(8)                          # batch ends since the last flush
        f_token = Signal(TOKEN_BITS)
        f_fold = Signal(DIM_BITS)
        f_tokens = Signal(TOKEN_BITS)

        # ---- accumulate: cycle 0 reads the row, cycle 1 adds and writes it back ----
        a_valid = Signal()
        a_addr = Signal.like(wr.addr)
        a_score = Signal(SCORE_BITS)
        a_data = Signal(data.ArrayLayout(signed(OUT_BITS), po))
        take = self.i.valid & self.i.ready
        m.d.sync += a_valid.eq(take)
        with m.If(take):
            m.d.sync += [a_addr.eq(times(self.i.payload.token, folds) + self.i.payload.fold),
                         a_score.eq(self.i.payload.score), a_data.eq(self.i.payload.data)]
            with m.If(self.i.payload.last):
                m.d.sync += seen.eq(seen + 1)

        # ---- flush: stall-all pipeline, read issue -> output register ------------------
        o_valid = Signal()
        r_valid = Signal()
        r_info = Signal(out_layout(po))
        en = ~o_valid | self.o.ready
        issue = flushing & en & (f_token < f_tokens)
        # Once the pending flush has seen its batches, i waits: the next layer's beats must
        # not reach rows that are still to be read out.
        due = self.flush.valid & (seen >= self.flush.payload.batches)
        start = ~clearing & ~flushing & ~a_valid & due
        m.d.comb += [self.flush.ready.eq(start),
                     self.i.ready.eq(~clearing & ~flushing & ~due)]
        with m.If(start):
            m.d.sync += [flushing.eq(1), f_token.eq(0), f_fold.eq(0),
                         f_tokens.eq(self.flush.payload.tokens),
                         seen.eq(seen - self.flush.payload.batches)]
        flush_addr = Signal.like(wr.addr)
        r_addr = Signal.like(wr.addr)
        m.d.comb += flush_addr.eq(times(f_token, folds) + f_fold)
        with m.If(en):
            m.d.sync += [r_valid.eq(issue), o_valid.eq(r_valid), r_addr.eq(flush_addr)]
            m.d.sync += [r_info.token.eq(f_token), r_info.fold.eq(f_fold),
                         r_info.last.eq((f_token + 1 == f_tokens) & (f_fold == folds - 1))]
            m.d.sync += [self.o.payload.token.eq(r_info.token), self.o.payload.fold.eq(r_info.fold),
                         self.o.payload.last.eq(r_info.last)]
            for c in range(po):
                value = rd.data[c]
                rounded = (value + (1 << 7)) >> 8
                m.d.sync += self.o.payload.data[c].eq(
                    Mux(rounded > (1 << 15) - 1, (1 << 15) - 1,
                        Mux(rounded < -(1 << 15), -(1 << 15), rounded)))
        with m.If(issue):
            with m.If(f_fold == folds - 1):
                m.d.sync += [f_fold.eq(0), f_token.eq(f_token + 1)]
            with m.Else():
                m.d.sync += f_fold.eq(f_fold + 1)
        # The flush ends when its last beat leaves (an empty flush ends at once).
        with m.If(flushing & (f_token == f_tokens) & ~r_valid & (~o_valid | self.o.ready)):
            m.d.sync += flushing.eq(0)
        m.d.comb += self.o.valid.eq(o_valid)

        # ---- the shared memory ports ----------------------------------------------------
        m.d.comb += [
            rd.addr.eq(Mux(flushing, flush_addr, times(self.i.payload.token, folds) + self.i.payload.fold)),
            rd.en.eq(Mux(flushing, en, 1)),
            # A row is cleared when its value moves to the output register (or after a reset).
            wr.addr.eq(Mux(a_valid, a_addr, Mux(clearing, c_addr, r_addr))),
            wr.en.eq(a_valid | (r_valid & en) | clearing),
        ]
        for c in range(po):
            m.d.comb += wr.data[c].eq(Mux(a_valid, rd.data[c] + a_score * a_data[c], Const(0)))
        return m


def exp_cycles(beats, tokens, folds):
    """Cycles from the first ``i`` beat to the last ``o`` beat when ``i`` runs at full rate.

    ``beats`` input beats (all experts), then a flush of ``tokens`` rows of ``folds``
    beats with ``o`` always ready: the flush starts the cycle after the last
    accumulate writes back (2 cycles after the last ``i`` beat), and its beats
    leave 2 cycles after they are issued.
    """
    return beats + 4 + tokens * folds
