"""Streaming integer softmax over rows of int16 log2-domain scores (``golden.softmax``).

Two output forms, selected at construction:

* ``mode="probs"`` (gating): uint8 Q0.8 probabilities, ``golden.softmax.softmax_u8``;
* ``mode="codes"`` (attention): 4-bit log2 codes of ``exp(u - max)``, ``golden.softmax.log2_codes``.

Rows of any length up to ``row_max`` stream in, ``lanes`` scores per beat, ``last``
on a row's final beat and ``pad`` (unused top lanes) on that beat. Each row is
written into a row buffer of a ring while the running maximum is kept; then the
buffer is read once (codes) or twice (probs), one beat per cycle per pass::

    i --> ring of row buffers (lib.memory, 1 write + 1 or 2 read ports) ------------+
    |     running max                                                                |
    |       pass A (probs):  e = exp2_neg(max - u) = EXP2_TABLE[d % 64] >> (d // 64) |
    |                        s = sum(e) --> FIFO(2) --> Reciprocal (one per row)     |
    |       pass B:  probs:  p = min(round_shift(e * rec, k + 7), 255)               |
    |                codes:  c = min(round_shift(max - u, 6), 15)          --> o ----+

The passes work on different rows at once: input on row ``r``, pass A on ``r - 1``,
the divider and pass B on earlier rows (ring of :attr:`SoftmaxUnit.slots` buffers:
4 for probs, 2 for codes). Each pass goes from one row straight on to the next
(no turnaround cycle), and a buffer released by pass B's last read takes the next
row's first beat in the same cycle, so at steady state the unit takes one beat per
cycle: rows of ``B`` beats every ``B`` cycles. Codes: any ``B``. Probs: ``B >= 14``;
shorter rows are bound by the divider (one reciprocal per 10 cycles) and the ring
(a row's buffer is busy for about ``2B + 19`` cycles): 4 rows every
``max(40, 3B + 14)`` cycles. :func:`exp_cycles` is the exact cycle model.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.softmax import CODE_ZERO, EXP2_BITS, EXP2_TABLE, LOG2_FRAC, RECIP_BITS

from ..params import check_int, validating
from .recip import Reciprocal, recip_latency
from .rounding import ROUND_STAGES, round_shift_saturate

__all__ = ["MODES", "RECIP_DIGITS", "in_layout", "out_layout", "SoftmaxUnit", "exp_cycles"]

MODES = ("probs", "codes")
#: Quotient bits per cycle of the row's divider (probs): 10 cycles per reciprocal.
RECIP_DIGITS = 2
#: Cycles from a pass B read issue to ``o`` valid, per mode (probs: read, exponential,
#: e * rec, the two stages of :func:`~rtl.compute.rounding.round_shift_saturate`).
OUT_LATENCY = {"probs": 3 + ROUND_STAGES, "codes": 2}
#: Cycles from pass A's last read issue of a row to its sum in the divider's FIFO.
SUM_LATENCY = 4
#: Row sums pass A may have in flight (its pipeline and the FIFO) before the divider takes them.
SUM_CREDITS = 2
#: Row buffers in the ring, per mode.
SLOTS = {"probs": 4, "codes": 2}


def in_layout(lanes):
    """One input beat: ``lanes`` int16 scores, ``last`` on a row's final beat, ``pad`` the
    number of unused lanes at the top of that final beat (ignored on other beats)."""
    return data.StructLayout({"data": data.ArrayLayout(signed(16), lanes), "last": 1,
                              "pad": range(lanes)})


def out_layout(lanes, mode):
    """One output beat: ``lanes`` probabilities (uint8) or codes (4 bit), framed like the input;
    padding lanes carry zero weight (probability 0, code 15)."""
    width = 8 if mode == "probs" else 4
    return data.StructLayout({"data": data.ArrayLayout(unsigned(width), lanes), "last": 1,
                              "pad": range(lanes)})


class SoftmaxUnit(wiring.Component):
    """Softmax over rows of up to ``row_max`` int16 scores, ``lanes`` per beat.

    Parameters
    ----------
    row_max : int, 1..4096
        Longest row (scores). A row that reaches ``row_max`` rounded up to whole
        beats without ``last`` is cut there (the rest is the next row).
    lanes : int, 1..16
        Scores per beat.
    mode : "probs" or "codes"

    Members
    -------
    i : In(stream.Signature(in_layout(lanes)))
        Rows of ``ceil(n / lanes)`` beats, ``last`` and ``pad = lanes * beats - n`` on
        the final one.
    o : Out(stream.Signature(out_layout(lanes, mode)))
        The row's probabilities or codes, in input order, with the same framing.

    Latency: on an idle unit, a row's first output leaves ``B + 3`` (codes) or
    ``2B + 19`` (probs) cycles after its first beat (``B`` beats). Throughput: one
    beat per cycle at steady state (probs: rows of at least 14 beats; see the module).
    Backpressure: ``o`` may stall at any time (pass B and its pipeline stall with
    it); ``i`` stalls while every row buffer is in use.
    Cycle model: :func:`exp_cycles`. Tested: rows of 1..256 scores and mixed
    lengths, lanes 1..4, every int16 extreme, all-equal rows, every exponent
    offset ``d`` in 0..1100 (the table's range and past it), random gaps and
    backpressure.
    """

    def __init__(self, row_max, lanes, mode):
        with validating(self):
            check_int("row_max", row_max, 1, 4096)
            check_int("lanes", lanes, 1, 16)
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._row_max, self._lanes, self._mode = row_max, lanes, mode
        super().__init__({
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(lanes, mode))),
        })

    row_max = property(lambda self: self._row_max)
    lanes = property(lambda self: self._lanes)
    mode = property(lambda self: self._mode)

    @property
    def slots(self):
        """Row buffers: probs 4 (input, pass A, divider, pass B), codes 2 (input, pass B)."""
        return SLOTS[self._mode]

    @property
    def max_beats(self):
        """Beats of the longest row: ``ceil(row_max / lanes)``."""
        return -(-self._row_max // self._lanes)

    @property
    def sum_width(self):
        """Bits of a row's sum of exponentials (each at most ``2**15``, full beats)."""
        return (self.max_beats * self._lanes << EXP2_BITS).bit_length()

    def elaborate(self, platform):
        m = Module()
        lanes, beats, slots = self._lanes, self.max_beats, self.slots
        probs = self._mode == "probs"
        m.submodules.rows = rows = memory.Memory(
            shape=data.ArrayLayout(signed(16), lanes), depth=slots * beats, init=[])
        wr = rows.write_port()

        def lane_keep(lane, row_last, pad):
            """Whether ``lane`` holds a score: not one of the ``pad`` top lanes of a final beat."""
            if lane == 0:
                return Const(1, 1)
            return ~row_last | (pad < lanes - lane)

        def advance(slot):
            return Mux(slot == slots - 1, 0, slot + 1)

        # Per-slot row facts, written when the row ends: maximum, last beat index, padding.
        row_info = data.StructLayout({"max": signed(16), "end": range(beats), "pad": range(lanes)})
        info = [Signal(row_info, name=f"info_{s}") for s in range(slots)]

        def info_of(slot):
            out = Signal(row_info, name="info_sel")
            with m.Switch(slot):
                for s in range(slots):
                    with m.Case(s):
                        m.d.comb += out.eq(info[s])
            return out

        # ---- input: write the row, keep its running maximum -------------------------------
        in_slot = Signal(range(slots))
        in_beat = Signal(range(beats))
        running = Signal(signed(16))
        held = Signal(range(slots + 1))          # written rows not yet released by pass B
        release = Signal()                       # pass B issues the last read of a row
        row_in = Signal()
        take = self.i.valid & self.i.ready
        row_end = self.i.payload.last | (in_beat == beats - 1)
        pad = Mux(self.i.payload.last, self.i.payload.pad, 0)
        lane_max = [Mux(lane_keep(lane, self.i.payload.last, self.i.payload.pad),
                        self.i.payload.data[lane], -32768) for lane in range(lanes)]
        while len(lane_max) > 1:
            pairs = [Mux(a > b, a, b) for a, b in zip(lane_max[::2], lane_max[1::2])]
            lane_max = pairs + lane_max[len(pairs) * 2:]
        beat_max = Signal(signed(16))
        new_max = Signal(signed(16))
        m.d.comb += [beat_max.eq(lane_max[0]),
                     new_max.eq(Mux((in_beat == 0) | (beat_max > running), beat_max, running))]
        m.d.comb += [
            # A buffer released this cycle takes the next row's first beat at once; a
            # one-beat row's read and write of the same word then see the old word.
            self.i.ready.eq((held < slots) | release),
            wr.addr.eq(in_slot * beats + in_beat),
            wr.data.eq(self.i.payload.data),
            wr.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += [running.eq(new_max), in_beat.eq(in_beat + 1)]
            with m.If(row_end):
                m.d.comb += row_in.eq(1)
                m.d.sync += [in_beat.eq(0), in_slot.eq(advance(in_slot))]
                with m.Switch(in_slot):
                    for s in range(slots):
                        with m.Case(s):
                            m.d.sync += [info[s].max.eq(new_max), info[s].end.eq(in_beat),
                                         info[s].pad.eq(pad)]
        m.d.sync += held.eq(held + row_in - release)

        def exponential(name, u, rowmax, keep, en):
            """``exp2_neg(rowmax - u)``: registered ``(d % 64, d // 64)``, then table and shift.

            ``keep`` low (a padding lane) makes the result 0.
            """
            d = Signal(unsigned(17), name=f"{name}_d")
            idx = Signal(LOG2_FRAC, name=f"{name}_idx")
            sh = Signal(17 - LOG2_FRAC, name=f"{name}_sh")
            m.d.comb += d.eq(rowmax - u)
            with m.If(en):
                # A padding lane gets a shift past the table's range: e = 0.
                m.d.sync += [idx.eq(d[:LOG2_FRAC]), sh.eq(Mux(keep, d[LOG2_FRAC:], 1 << 10))]
            entry = Signal(EXP2_BITS + 1, name=f"{name}_entry")
            with m.Switch(idx):
                for f, v in enumerate(EXP2_TABLE.tolist()):
                    with m.Case(f):
                        m.d.comb += entry.eq(v)
            e = Signal(EXP2_BITS + 1, name=f"{name}_e")
            m.d.comb += e.eq(Mux(sh[4:].any(), 0, entry >> sh[:4]))
            return e

        def sequencer(name, can_start, en):
            """Walks rows buffer by buffer, one read per cycle while ``en``; goes straight on
            to the next row when ``can_start`` holds at a row's last read."""
            s = {key: Signal(shape, name=f"{name}_{key}") for key, shape in (
                ("busy", 1), ("slot", range(slots)), ("beat", range(beats)), ("load", 1),
                ("issue", 1), ("row_last", 1))}
            s["info"] = Signal(row_info, name=f"{name}_info")
            next_slot = Mux(s["busy"], advance(s["slot"]), s["slot"])
            next_info = info_of(next_slot)
            m.d.comb += [
                s["row_last"].eq(s["busy"] & (s["beat"] == s["info"].end)),
                s["issue"].eq(en & s["busy"]),
                s["load"].eq(en & (~s["busy"] | s["row_last"]) & can_start),
            ]
            with m.If(s["issue"]):
                m.d.sync += s["beat"].eq(s["beat"] + 1)
                with m.If(s["row_last"]):
                    m.d.sync += [s["busy"].eq(0), s["slot"].eq(advance(s["slot"]))]
            with m.If(s["load"]):
                m.d.sync += [s["busy"].eq(1), s["beat"].eq(0), s["info"].eq(next_info)]
            s["addr"] = s["slot"] * beats + s["beat"]
            return s

        # ---- pass B: read the row again and emit (stall-all pipeline, en) -------------------
        en = ~self.o.valid | self.o.ready
        if probs:
            m.submodules.recip = recip = Reciprocal(self.sum_width, digits=RECIP_DIGITS)
            b_can = recip.o.valid
        else:
            b_pending = Signal(range(slots + 1))
            b_can = b_pending > 0
        b = sequencer("b", b_can, en)
        rd_b = rows.read_port()
        m.d.comb += [rd_b.addr.eq(b["addr"]), rd_b.en.eq(en),
                     release.eq(b["issue"] & b["row_last"])]
        stage = data.StructLayout({"valid": 1, "max": signed(16), "rec": RECIP_BITS + 2,
                                   "k": range(self.sum_width + 1), "last": 1, "pad": range(lanes)})
        depth = OUT_LATENCY[self._mode]
        st = [Signal(stage, name=f"b_stage_{n + 1}") for n in range(depth)]
        b_rec = Signal(RECIP_BITS + 2)
        b_k = Signal(range(self.sum_width + 1))
        if probs:
            m.d.comb += recip.o.ready.eq(b["load"])
            with m.If(b["load"]):
                m.d.sync += [b_rec.eq(recip.o.payload.rec), b_k.eq(recip.o.payload.k)]
        else:
            m.d.sync += b_pending.eq(b_pending + row_in - b["load"])
        with m.If(en):
            m.d.sync += [st[0].valid.eq(b["issue"]), st[0].max.eq(b["info"].max),
                         st[0].rec.eq(b_rec), st[0].k.eq(b_k), st[0].last.eq(b["row_last"]),
                         st[0].pad.eq(Mux(b["row_last"], b["info"].pad, 0))]
            m.d.sync += [st[n + 1].eq(st[n]) for n in range(depth - 1)]
        m.d.comb += [self.o.valid.eq(st[-1].valid), self.o.payload.last.eq(st[-1].last),
                     self.o.payload.pad.eq(st[-1].pad)]
        for lane in range(lanes):
            keep = lane_keep(lane, st[0].last, st[0].pad)
            if probs:
                e = exponential(f"b{lane}", rd_b.data[lane], st[0].max, keep, en)
                product = Signal(EXP2_BITS + 1 + RECIP_BITS + 2, name=f"product_{lane}")
                with m.If(en):
                    m.d.sync += product.eq(e * st[1].rec)
                # round_shift(e * rec, k + 15 - 8), saturated to 255 (never negative)
                p = round_shift_saturate(m, en, product, st[2].k + (RECIP_BITS - 8),
                                         unsigned(8), hi=255, name=f"p_{lane}")
                m.d.comb += self.o.payload.data[lane].eq(p)
            else:
                d = Signal(unsigned(17), name=f"d_{lane}")
                code = Signal(4, name=f"code_{lane}")
                m.d.comb += d.eq(st[0].max - rd_b.data[lane])
                rounded = (d + (1 << (LOG2_FRAC - 1))) >> LOG2_FRAC
                with m.If(en):
                    m.d.sync += code.eq(Mux(~keep | (rounded > CODE_ZERO), CODE_ZERO, rounded))
                m.d.comb += self.o.payload.data[lane].eq(code)

        if not probs:
            return m

        # ---- pass A (probs): sum of exponentials, then one division per row ---------------
        a_pending = Signal(range(slots + 1))
        a_out = Signal(range(SUM_CREDITS + 1))   # rows started whose sum the divider has not taken
        m.submodules.sums = sums = fifo.SyncFIFO(width=self.sum_width, depth=SUM_CREDITS)
        a = sequencer("a", (a_pending > 0) & (a_out < SUM_CREDITS), 1)
        rd_a = rows.read_port()
        m.d.comb += [rd_a.addr.eq(a["addr"]), rd_a.en.eq(1)]
        wiring.connect(m, sums.r_stream, recip.i)
        m.d.sync += [a_pending.eq(a_pending + row_in - a["load"]),
                     a_out.eq(a_out + a["load"] - (recip.i.valid & recip.i.ready))]
        # Cycle 1: read data; cycle 2: exponentials, beat sum; cycle 3: accumulate.
        a_stage = data.StructLayout({"valid": 1, "first": 1, "last": 1, "max": signed(16),
                                     "pad": range(lanes)})
        a1, a2, a3 = (Signal(a_stage, name=f"a_stage_{n}") for n in (1, 2, 3))
        beat_sum = Signal(EXP2_BITS + 1 + max(1, lanes - 1).bit_length())
        acc = Signal(self.sum_width)
        m.d.sync += [a1.valid.eq(a["issue"]), a1.first.eq(a["beat"] == 0),
                     a1.last.eq(a["row_last"]), a1.max.eq(a["info"].max),
                     a1.pad.eq(a["info"].pad), a2.eq(a1), a3.eq(a2)]
        terms = [exponential(f"a{lane}", rd_a.data[lane], a1.max,
                             lane_keep(lane, a1.last, a1.pad), 1) for lane in range(lanes)]
        m.d.sync += beat_sum.eq(sum(terms))
        total = Mux(a3.first, 0, acc) + beat_sum
        with m.If(a3.valid):
            m.d.sync += acc.eq(total)
        m.d.comb += [sums.w_data.eq(total), sums.w_en.eq(a3.valid & a3.last)]
        return m


def exp_cycles(lengths, lanes, mode):
    """Cycles from the first ``i`` beat to the last ``o`` beat, rows of ``lengths`` scores.

    ``i`` offers a beat every cycle and ``o`` is always ready; every length is at
    most ``row_max``. The recurrences follow the hardware, row by row (``B`` beats):

    * input: a row's first beat is taken once the previous row is in and the buffer
      of the row ``slots`` before it is released (in the release cycle itself);
    * a pass goes on from its last read of a row to the next row in the next cycle
      if that row was ready at the last read; otherwise it starts it the cycle after
      it is ready (one idle cycle), reading from the cycle after that;
    * pass A (probs) needs the row written (the cycle after its last beat) and at
      most one unfinished sum; the sum reaches the divider's FIFO ``SUM_LATENCY``
      cycles after the last read; the divider takes it when its previous result
      is taken, and its result is ready ``Reciprocal.latency`` cycles later;
    * pass B needs the reciprocal (probs) or the written row (codes); a buffer is
      released at pass B's last read; outputs leave ``OUT_LATENCY`` cycles after reads.
    """
    probs = mode == "probs"
    slots = SLOTS[mode]
    latency = recip_latency(RECIP_DIGITS)
    in_end, release, take, b_take = [], [], [], []
    a_last = b_last = -1
    for r, n in enumerate(lengths):
        beats = -(-n // lanes)
        start = max(in_end[-1] + 1 if in_end else 0, release[r - slots] if r >= slots else 0)
        in_end.append(start + beats - 1)
        ready = in_end[r] + 1                          # row complete, seen by the passes
        if probs:
            credit = take[r - 2] + 1 if r >= 2 else 0   # SUM_CREDITS = 2
            a_first = _next_start(a_last, max(ready, credit))
            a_last = a_first + beats - 1
            take.append(max(a_last + SUM_LATENCY, b_take[r - 1] if r else 0))
            ready = take[r] + latency
        b_first = _next_start(b_last, ready)
        b_take.append(b_first - 1)                      # probs: the reciprocal is taken at the load
        b_last = b_first + beats - 1
        release.append(b_last)
    return b_last + OUT_LATENCY[mode] + 1


def _next_start(last, ready):
    """First read of a pass's next row: chained after ``last`` or started from idle."""
    if ready <= last:
        return last + 1
    return max(last + 1, ready) + 1
