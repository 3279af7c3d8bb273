"""Streaming integer softmax over rows of int16 log2-domain scores (``golden.softmax``).

Two output forms, selected at construction:

* ``mode="probs"`` (gating): uint8 Q0.8 probabilities, ``golden.softmax.softmax_u8``;
* ``mode="codes"`` (attention): 4-bit log2 codes of ``exp(u - max)``, ``golden.softmax.log2_codes``.

Rows stream in, ``lanes`` scores per beat, into a ring of row buffers while the
running maximum is kept. A finished row then goes through up to two passes over
its buffer, each one beat per cycle::

    i --> [ row buffer ring: write | pass A | pass B ] --> o
          running max        |  e = exp2_neg(m - u), sum --> Reciprocal (one per row)
                             +--------- pass B: p = min(round_shift(e * rec, k + 7), 255)

``codes`` needs only pass B (``c = min(round_shift(m - u, 6), 15)``); ``probs`` runs
pass A of row n+1 while pass B of row n emits (three row buffers). Steady state, a
row of ``B = row / lanes`` beats takes ``B + 4`` cycles (probs: pass A's turnaround)
or ``B + 1`` (codes), and at least the divider's 20 (probs); see :func:`exp_cycles`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.softmax import CODE_ZERO, EXP2_BITS, EXP2_TABLE, LOG2_FRAC, RECIP_BITS

from .params import check_int, validating
from .recip import Reciprocal

__all__ = ["MODES", "SoftmaxUnit", "exp_cycles"]

MODES = ("probs", "codes")
#: Register stages from a buffer read to the output register, per mode.
_OUT_STAGES = {"probs": 5, "codes": 3}


class SoftmaxUnit(wiring.Component):
    """Softmax of rows of ``row`` int16 scores, ``lanes`` per beat.

    Parameters
    ----------
    row : int, 1..1024
        Scores per row, a multiple of ``lanes``.
    lanes : int, 1..16
        Scores per beat.
    mode : "probs" or "codes"

    Members
    -------
    i : In(stream.Signature(data.ArrayLayout(signed(16), lanes)))
        ``row // lanes`` beats per row.
    o : Out(stream.Signature(data.ArrayLayout(unsigned(8 or 4), lanes)))
        The row's probabilities (uint8) or codes (4 bit), in input order.

    Backpressure: ``o`` may stall at any time (the passes stall with it); ``i`` stalls
    while every row buffer is in use. Cycle model: :func:`exp_cycles`.
    Tested: rows of 1..256 scores, 1..4 lanes, every int16 value, random gaps.
    """

    def __init__(self, row, lanes, mode):
        with validating(self):
            check_int("lanes", lanes, 1, 16)
            check_int("row", row, 1, 1024)
            if row % lanes:
                raise ValueError(f"row must be a multiple of lanes ({lanes}), not {row}")
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._row, self._lanes, self._mode = row, lanes, mode
        width = 8 if mode == "probs" else 4
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(16), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(width), lanes))),
        })

    @property
    def slots(self):
        """Row buffers: write, pass A and pass B each own one (two for codes)."""
        return 3 if self._mode == "probs" else 2

    def elaborate(self, platform):
        m = Module()
        lanes, beats, probs = self._lanes, self._row // self._lanes, self._mode == "probs"
        slots = self.slots
        word = data.ArrayLayout(signed(16), lanes)
        m.submodules.rows = rows = memory.Memory(shape=word, depth=slots * beats, init=[])
        wr = rows.write_port()
        rd_b = rows.read_port()
        sum_width = EXP2_BITS + 1 + max(1, (self._row - 1).bit_length())
        row_max = Signal(data.ArrayLayout(signed(16), slots))

        def advance(slot):
            return Mux(slot == slots - 1, 0, slot + 1)

        def pick(values, slot):
            return values[slot]

        # Rows are numbered in arrival order; row r lives in buffer r % slots. `held`
        # counts buffers written and not yet released by pass B.
        in_slot, a_slot, b_slot = (Signal(range(slots), name=n)
                                   for n in ("in_slot", "a_slot", "b_slot"))
        held = Signal(range(slots + 1))
        written = Signal(range(slots + 1))        # rows written, not yet started by the next pass
        row_in = Signal()
        release = Signal()
        next_start = Signal()                     # pass A (probs) or B (codes) starts a row

        # ---- input: write the row and its running maximum ------------------------------
        in_beat = Signal(range(beats))
        running = Signal(signed(16))
        beat_max = self.i.payload[0]
        for lane in range(1, lanes):
            beat_max = Mux(self.i.payload[lane] > beat_max, self.i.payload[lane], beat_max)
        new_max = Mux((in_beat == 0) | (beat_max > running), beat_max, running)
        m.d.comb += [
            self.i.ready.eq(held < slots),
            wr.addr.eq(in_slot * beats + in_beat),
            wr.data.eq(self.i.payload),
            wr.en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [running.eq(new_max),
                         in_beat.eq(Mux(in_beat == beats - 1, 0, in_beat + 1))]
            with m.If(in_beat == beats - 1):
                m.d.comb += row_in.eq(1)
                m.d.sync += [in_slot.eq(advance(in_slot)), row_max[in_slot].eq(new_max)]
        m.d.sync += [held.eq(held + row_in - release), written.eq(written + row_in - next_start)]

        def exponential(u, rowmax, en, name):
            """Registered ``(d % 64, d // 64)`` of ``d = max - u``, then the table and shift."""
            d = Signal(unsigned(17), name=f"{name}_d")
            idx = Signal(LOG2_FRAC, name=f"{name}_idx")
            sh = Signal(17 - LOG2_FRAC, name=f"{name}_sh")
            m.d.comb += d.eq(rowmax - u)
            with m.If(en):
                m.d.sync += [idx.eq(d[:LOG2_FRAC]), sh.eq(d[LOG2_FRAC:])]
            entry = Signal(EXP2_BITS + 1, name=f"{name}_entry")
            with m.Switch(idx):
                for f, v in enumerate(EXP2_TABLE.tolist()):
                    with m.Case(f):
                        m.d.comb += entry.eq(v)
            e = Signal(EXP2_BITS + 1, name=f"{name}_e")
            m.d.comb += e.eq(Mux(sh > EXP2_BITS, 0, entry >> sh[:4]))
            return e

        # ---- pass B: read the row again and emit (stall-all pipeline, en) -------------
        out_stages = _OUT_STAGES[self._mode]
        en = ~self.o.valid | self.o.ready
        b_busy = Signal()
        b_beat = Signal(range(beats))
        b_max = Signal(signed(16))
        b_rec = Signal(RECIP_BITS + 2)
        b_k = Signal(range(sum_width + 1))
        valid = Signal(out_stages - 1)            # stages after the read issue
        # Per-row constants travel with the data (the next row may start behind it).
        s_max = [Signal(signed(16), name=f"s{n}_max") for n in range(2)]
        s_rec = [Signal(RECIP_BITS + 2, name=f"s{n}_rec") for n in range(3)]
        s_k = [Signal(range(sum_width + 1), name=f"s{n}_k") for n in range(4)]
        if probs:
            # The divider holds one result, taken when pass B starts that row.
            m.submodules.recip = recip = Reciprocal(sum_width)
            b_can_start = recip.o.valid
        else:
            b_can_start = written > 0
        b_start = ~b_busy & b_can_start
        issue = b_busy & en
        m.d.comb += [rd_b.addr.eq(b_slot * beats + b_beat), rd_b.en.eq(en)]
        with m.If(b_start):
            m.d.sync += [b_busy.eq(1), b_beat.eq(0), b_max.eq(pick(row_max, b_slot))]
            if probs:
                m.d.comb += recip.o.ready.eq(1)
                m.d.sync += [b_rec.eq(recip.o.payload.rec), b_k.eq(recip.o.payload.k)]
        with m.If(issue):
            m.d.sync += b_beat.eq(b_beat + 1)
            with m.If(b_beat == beats - 1):
                m.d.comb += release.eq(1)
                m.d.sync += [b_busy.eq(0), b_slot.eq(advance(b_slot))]
        with m.If(en):
            m.d.sync += [valid.eq(Cat(issue, valid[:-1])), s_max[0].eq(b_max),
                         s_rec[0].eq(b_rec), s_k[0].eq(b_k)]
            m.d.sync += [s_rec[n + 1].eq(s_rec[n]) for n in range(2)]
            m.d.sync += [s_k[n + 1].eq(s_k[n]) for n in range(3)]
            m.d.sync += s_max[1].eq(s_max[0])
        m.d.comb += self.o.valid.eq(valid[-1])
        u_b = rd_b.data
        for lane in range(lanes):
            if probs:
                e = exponential(u_b[lane], s_max[0], en, f"b{lane}")
                product = Signal(EXP2_BITS + 1 + RECIP_BITS + 2, name=f"product_{lane}")
                p = Signal(8, name=f"p_{lane}")
                # round_shift(e * rec, k + 15 - 8), saturated to 255
                sh = s_k[2] + (RECIP_BITS - 8)
                rounded = (product + ((1 << sh) >> 1)) >> sh
                with m.If(en):
                    m.d.sync += [product.eq(e * s_rec[1]),
                                 p.eq(Mux(rounded > 255, 255, rounded))]
                m.d.comb += self.o.payload[lane].eq(p)
            else:
                d = Signal(unsigned(17), name=f"d_{lane}")
                code = Signal(4, name=f"code_{lane}")
                m.d.comb += d.eq(s_max[0] - u_b[lane])
                rounded = (d + (1 << (LOG2_FRAC - 1))) >> LOG2_FRAC
                with m.If(en):
                    m.d.sync += code.eq(Mux(rounded > CODE_ZERO, CODE_ZERO, rounded))
                m.d.comb += self.o.payload[lane].eq(code)

        if not probs:
            m.d.comb += next_start.eq(b_start)
            return m

        # ---- pass A (probs): sum of exponentials, then one division per row ----------
        rd_a = rows.read_port()
        a_max = Signal(signed(16))
        a_beat = Signal(range(beats))
        a_sum = Signal(sum_width)
        a_valid = Signal(2)                        # [0]: read data valid, [1]: terms valid
        running_a = Signal()
        m.d.comb += [rd_a.addr.eq(a_slot * beats + a_beat), rd_a.en.eq(1)]
        terms = [exponential(rd_a.data[lane], a_max, 1, f"a{lane}") for lane in range(lanes)]
        m.d.sync += a_valid.eq(Cat(running_a, a_valid[0]))
        with m.If(a_valid[1]):
            m.d.sync += a_sum.eq(sum(terms, a_sum))
        with m.FSM(name="pass_a"):
            with m.State("IDLE"):
                with m.If(written > 0):
                    m.d.comb += next_start.eq(1)
                    m.d.sync += [a_max.eq(pick(row_max, a_slot)), a_beat.eq(0), a_sum.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running_a.eq(1)
                m.d.sync += a_beat.eq(a_beat + 1)
                with m.If(a_beat == beats - 1):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~a_valid[0]):            # the last terms are added this cycle
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [recip.i.valid.eq(1), recip.i.payload.eq(a_sum)]
                with m.If(recip.i.ready):
                    m.d.sync += a_slot.eq(advance(a_slot))
                    m.next = "IDLE"
        return m


def exp_cycles(row, lanes, mode, rows):
    """Cycles from the first ``i`` beat to the last ``o`` beat for ``rows`` rows at full rate.

    ``i`` offers a beat every cycle and ``o`` is always ready. The recurrences follow
    the hardware: a row enters once a buffer is free (pass B released the row
    ``slots`` before it); pass A (probs) starts the cycle after the row is written,
    runs ``beats`` cycles plus 2 to drain, then hands the sum to the divider when it
    is idle (its previous result taken); pass B starts when the row's reciprocal is
    ready (codes: the cycle after the row is written) and its previous row has issued,
    issues ``beats`` reads and its results leave ``_OUT_STAGES - 1`` cycles later.
    """
    beats = row // lanes
    probs = mode == "probs"
    slots = 3 if probs else 2
    in_end, release = [], []
    a_idle, b_idle, recip_idle, last = 0, 0, 0, -1
    for r in range(rows):
        start = max(in_end[-1] + 1 if in_end else 0, release[r - slots] + 1 if r >= slots else 0)
        in_end.append(start + beats - 1)
        if probs:
            a_start = max(in_end[r] + 1, a_idle)
            send = max(a_start + beats + 3, recip_idle)
            a_idle = send + 1
            b_start = max(send + Reciprocal.LATENCY, b_idle)
            recip_idle = b_start
        else:
            b_start = max(in_end[r] + 1, b_idle)
        release.append(b_start + beats)
        b_idle = b_start + beats + 1
        last = b_start + beats + _OUT_STAGES[mode] - 1
    return last + 1
