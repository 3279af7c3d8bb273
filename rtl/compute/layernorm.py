"""Streaming integer LayerNorm: int16 tokens in, int8 out, as ``golden.layernorm.int_layernorm``.

::

    p (parameter images) --> ParamLoader --> 2 banks of {gain, bias} per channel;
                                             shift, eps per bank
    i (token beats) --> token ring (lib.memory) + S1 = sum(x), S2 = sum(x*x) (one pass)
                         | token end: var + eps = D*S2 - S1*S1 + eps
                         +--> FIFO --> ISqrt --> Reciprocal --> output pass --> o
                                       (once per token)         c = D*x - S1
                                                  z = sat16(round_shift(c*rec, k+5))
                                                  y = sat8(round_shift(z*gain + bias, shift))

A *batch* is the tokens of one layer: the n-th parameter image on ``p`` applies
to the n-th batch on ``i`` (``last`` on its final beat); the next image loads
into the other bank while a batch runs. The exact square root and the reciprocal
are digit-serial (:mod:`rtl.compute.recip`), once per token; the token ring lets them work
on one token while the next streams in and an earlier one streams out, and the
output pass goes from one token straight on to the next. Sized by :func:`plan`:
digits per cycle so that each of them takes at most a token's beats, ring slots
so that, at steady state, the unit takes one beat per cycle.
"""

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden.layernorm import D_MAX, NORM_FRAC
from golden.softmax import RECIP_BITS

from ..params import check_int, validating
from .constmul import times
from .recip import QUOTIENT_BITS, ISqrt, Reciprocal
from .rounding import ROUND_STAGES, round_shift_saturate

__all__ = ["param_layout", "in_layout", "out_layout", "channel_layout", "Plan", "plan",
           "ParamLoader", "LayerNormUnit", "exp_cycles"]

#: ``eps`` is at most 2**40 (``golden.layernorm.int_layernorm``).
EPS_BITS = 41
#: Cycles from a token's last beat taken to its ``var + eps`` readable in the square root's FIFO.
STATS_LATENCY = 4
#: Cycles from an output-pass read to ``o`` valid: read, c, c*rec, z (two stages of
#: :func:`~rtl.compute.rounding.round_shift_saturate`), z*gain + bias, y (two again).
OUT_LATENCY = 4 + 2 * ROUND_STAGES
#: Most digits per cycle of the square root and the reciprocal (compare-subtract chain length).
MAX_DIGITS = 4
#: Ring slots are chosen in this range (:func:`plan`).
SLOTS_RANGE = (3, 8)


def param_layout(lanes):
    """One parameter beat: gain and bias of ``lanes`` channels; ``shift`` and ``eps`` (taken
    from the image's final beat)."""
    return data.StructLayout({
        "gain": data.ArrayLayout(signed(16), lanes),
        "bias": data.ArrayLayout(signed(32), lanes),
        "shift": 6,
        "eps": EPS_BITS,
    })


def in_layout(lanes):
    """One input beat: ``lanes`` int16 elements; ``last`` on the final beat of a batch."""
    return data.StructLayout({"data": data.ArrayLayout(signed(16), lanes), "last": 1})


def out_layout(lanes):
    """One output beat: ``lanes`` int8 elements; ``last`` on the final beat of a batch."""
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


@dataclass(frozen=True)
class Plan:
    """The derived sizes of a :class:`LayerNormUnit` (see :func:`plan`)."""
    #: Beats per token, ``d // lanes``.
    beats: int
    #: Bits of ``var + eps`` (even): ``D**2 * 2**30 + 2**40`` fits.
    var_bits: int
    #: Root bits per cycle of the square root, and quotient bits per cycle of the reciprocal.
    sqrt_digits: int
    recip_digits: int
    #: Token buffers in the ring.
    slots: int

    @property
    def sqrt_latency(self):
        return -(-self.var_bits // 2 // self.sqrt_digits) + 1

    @property
    def recip_latency(self):
        return -(-QUOTIENT_BITS // self.recip_digits) + 1


def _digits(bits, beats):
    """Fewest digits per cycle (at most MAX_DIGITS) for which ``bits`` take at most ``beats``."""
    for digits in range(1, MAX_DIGITS + 1):
        if -(-bits // digits) + 1 <= beats:
            return digits
    return MAX_DIGITS


def plan(d, lanes):
    """Sizes for tokens of ``d`` elements, ``lanes`` per beat.

    The square root and the reciprocal get the fewest digits per cycle that keep
    each within a token's beats (at most :data:`MAX_DIGITS`); the ring gets the
    fewest slots (3..8) that reach the steady-state token period of 8 slots.
    """
    beats = d // lanes
    var_bits = (d * d * (1 << 30) + (1 << 40)).bit_length()
    var_bits += var_bits % 2
    sqrt_digits, recip_digits = _digits(var_bits // 2, beats), _digits(QUOTIENT_BITS, beats)

    def period(slots):
        p = Plan(beats, var_bits, sqrt_digits, recip_digits, slots)
        return _cycles(p, 17) - _cycles(p, 16)

    best = period(SLOTS_RANGE[1])
    slots = next(s for s in range(SLOTS_RANGE[0], SLOTS_RANGE[1] + 1) if period(s) == best)
    return Plan(beats, var_bits, sqrt_digits, recip_digits, slots)


def channel_layout(lanes):
    """One word of the parameter memory: gain and bias of ``lanes`` channels."""
    return data.StructLayout({"gain": data.ArrayLayout(signed(16), lanes),
                              "bias": data.ArrayLayout(signed(32), lanes)})


class ParamLoader(wiring.Component):
    """Parameter images into the LayerNorm unit's two banks (its first block).

    Images fill bank 0, then 1, then 0 again; bank ``b`` is words ``b * beats ..`` of the
    parameter memory, one word per beat; ``shift`` and ``eps`` come from the image's final
    beat.

    Parameters
    ----------
    beats : int
        Beats per image (``d // lanes``).
    lanes : int

    Members
    -------
    p : In(stream.Signature(param_layout(lanes)))
    params : In(memory.WritePort.Signature(...))
        Driven: the write port of the parameter memory (:func:`channel_layout` words).
    shift : Out(data.ArrayLayout(6, 2))
    eps : Out(data.ArrayLayout(EPS_BITS, 2))
        Per bank, the image's output shift and epsilon.
    done : Out(2)
        Pulse on bit ``b`` with the final beat of an image into bank ``b``.
    full : Out(2)
        Bank ``b`` holds an image nobody has released.
    release : In(2)
        Pulse: the unit's last read of bank ``b`` (clears ``full[b]``).

    Throughput: one beat per cycle while the bank it fills is free; ``p.ready`` is low
    while ``full`` holds that bank.
    """

    def __init__(self, beats, lanes):
        self._beats = beats
        super().__init__({
            "p": In(stream.Signature(param_layout(lanes))),
            "params": In(memory.WritePort.Signature(addr_width=ceil_log2(2 * beats),
                                                     shape=channel_layout(lanes))),
            "shift": Out(data.ArrayLayout(6, 2)),
            "eps": Out(data.ArrayLayout(EPS_BITS, 2)),
            "done": Out(2),
            "full": Out(2),
            "release": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        beats = self._beats
        p_wr = self.params
        load_bank = Signal()
        load_beat = Signal(range(beats))
        m.d.comb += [
            self.p.ready.eq(~self.full.bit_select(load_bank, 1)),
            p_wr.addr.eq(Mux(load_bank, beats, 0) + load_beat),
            p_wr.data.gain.eq(self.p.payload.gain),
            p_wr.data.bias.eq(self.p.payload.bias),
            p_wr.en.eq(self.p.valid & self.p.ready),
        ]
        with m.If(self.p.valid & self.p.ready):
            m.d.sync += load_beat.eq(Mux(load_beat == beats - 1, 0, load_beat + 1))
            with m.If(load_beat == beats - 1):
                m.d.comb += self.done.eq(1 << load_bank)
                m.d.sync += [load_bank.eq(~load_bank),
                             self.shift[load_bank].eq(self.p.payload.shift),
                             self.eps[load_bank].eq(self.p.payload.eps)]
        m.d.sync += self.full.eq((self.full | self.done) & ~self.release)
        return m


class LayerNormUnit(wiring.Component):
    """LayerNorm over tokens of ``d`` int16 elements, ``lanes`` per beat.

    Parameters
    ----------
    d : int, 2..1024
        Elements per token (the model dimension), a multiple of ``lanes``.
    lanes : int, 1..32

    Members
    -------
    p : In(stream.Signature(param_layout(lanes)))
        Parameter images of ``d // lanes`` beats (channels in order). An image goes
        into the free bank; ``p`` stalls while both banks are in use.
    i : In(stream.Signature(in_layout(lanes)))
        Tokens of ``d // lanes`` beats; ``last`` ends a batch. ``i`` stalls until the
        batch's parameters are loaded, and while every ring slot is in use.
    o : Out(stream.Signature(out_layout(lanes)))

    Throughput: one beat per cycle at steady state (a token every ``B = d // lanes``
    cycles) when ``B`` covers the square root and the reciprocal (:func:`plan`; all
    of d = 192 and 384 with up to 16 lanes, d = 384 with 32); below that, a token every
    7 cycles (d = 192 with 32 lanes). Latency: on an idle unit a token's
    first output leaves ``B + sqrt_latency + recip_latency + 10`` cycles after its
    first beat (d = 192, 4 lanes: 48 + 24 + 18 + 10 = 100). A parameter bank is free again once the
    batch's final beat has read its gain and bias (3 cycles after its token read).
    Backpressure: any stream may stall;
    ``o`` stalls the output pass and its pipeline. Cycle model: :func:`exp_cycles`.
    Tested: d in {4, 6, 8, 192, 384}, lanes 1..16 and 32, constant tokens (eps), int16
    extremes (largest variance, saturating z), random gaps and backpressure.
    """

    def __init__(self, d, lanes):
        with validating(self):
            check_int("lanes", lanes, 1, 32)
            check_int("d", d, 2, D_MAX)
            if d % lanes:
                raise ValueError(f"d must be a multiple of lanes ({lanes}), not {d}")
        self._d, self._lanes = d, lanes
        self._plan = plan(d, lanes)
        super().__init__({
            "p": In(stream.Signature(param_layout(lanes))),
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(lanes))),
        })

    d = property(lambda self: self._d)
    lanes = property(lambda self: self._lanes)
    plan = property(lambda self: self._plan)

    def elaborate(self, platform):
        m = Module()
        d, lanes, pl = self._d, self._lanes, self._plan
        beats, slots = pl.beats, pl.slots
        sum_bits = 16 + (d - 1).bit_length() + 1           # |S1| <= d * 2**15
        sq_bits = 30 + d.bit_length() + 1                  # S2 <= d * 2**30
        root_bits = pl.var_bits // 2

        def advance(slot):
            return Mux(slot == slots - 1, 0, slot + 1)

        # ---- parameters: two banks ------------------------------------------------------
        m.submodules.params = params = memory.Memory(shape=channel_layout(lanes),
                                                     depth=2 * beats, init=[])
        m.submodules.loader = loader = ParamLoader(beats, lanes)
        wiring.connect(m, wiring.flipped(self.p), loader.p)
        wiring.connect(m, loader.params, params.write_port())
        p_rd = params.read_port()
        shift, eps = loader.shift, loader.eps
        bank_release = loader.release
        # The input side's view: a bank holds parameters its next batch has not yet taken in.
        # (A bank stays full until the output pass has read it: a batch two images on must
        # not take in tokens against the older batch's parameters still there.)
        bank_fresh = Signal(2)
        batch_in = Signal(2)

        # ---- input: token ring, one-pass statistics ------------------------------------------
        m.submodules.tokens = tokens = memory.Memory(
            shape=data.ArrayLayout(signed(16), lanes), depth=slots * beats, init=[])
        x_wr = tokens.write_port()
        x_rd = tokens.read_port()
        slot_info = data.StructLayout({"s1": signed(sum_bits), "bank": 1, "last": 1})
        info = Signal(data.ArrayLayout(slot_info, slots))
        held = Signal(range(slots + 1))           # written tokens not yet released by the output
        release = Signal()
        row_in = Signal()
        in_slot = Signal(range(slots))
        in_beat = Signal(range(beats))
        in_bank = Signal()
        take = self.i.valid & self.i.ready
        token_end = in_beat == beats - 1
        m.d.comb += [
            # A slot released this cycle takes the next token's first beat at once.
            self.i.ready.eq(bank_fresh.bit_select(in_bank, 1) & ((held < slots) | release)),
            x_wr.addr.eq(times(in_slot, beats) + in_beat),
            x_wr.data.eq(self.i.payload.data),
            x_wr.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += in_beat.eq(Mux(token_end, 0, in_beat + 1))
            with m.If(token_end):
                m.d.comb += row_in.eq(1)
                m.d.sync += in_slot.eq(advance(in_slot))
                with m.If(self.i.payload.last):
                    m.d.comb += batch_in.eq(1 << in_bank)
                    m.d.sync += in_bank.eq(~in_bank)
        m.d.sync += bank_fresh.eq((bank_fresh | loader.done) & ~batch_in)
        m.d.sync += held.eq(held + row_in - release)

        # Cycle 1: the beat's sums; cycle 2: the token's S1, S2; cycle 3: D*S2 and S1*S1;
        # cycle 4: var + eps into the FIFO (one entry per ring slot: it cannot overflow).
        stat = data.StructLayout({"valid": 1, "first": 1, "end": 1, "slot": range(slots),
                                  "bank": 1, "last": 1})
        st1, st2, st3 = (Signal(stat, name=f"stat_{n}") for n in (1, 2, 3))
        beat_s1 = Signal(signed(16 + lanes.bit_length()))
        beat_s2 = Signal(unsigned(30 + lanes.bit_length()))
        acc1, tok1 = Signal(signed(sum_bits)), Signal(signed(sum_bits))
        acc2, tok2 = Signal(unsigned(sq_bits)), Signal(unsigned(sq_bits))
        s1sq = Signal(unsigned(2 * sum_bits))
        ds2 = Signal(unsigned(sq_bits + d.bit_length()))
        m.d.sync += [
            st1.valid.eq(take), st1.first.eq(in_beat == 0), st1.end.eq(token_end),
            st1.slot.eq(in_slot), st1.bank.eq(in_bank), st1.last.eq(self.i.payload.last),
            beat_s1.eq(sum(self.i.payload.data[n] for n in range(lanes))),
            beat_s2.eq(sum(self.i.payload.data[n] * self.i.payload.data[n] for n in range(lanes))),
            st2.eq(st1), st2.valid.eq(st1.valid & st1.end), st3.eq(st2),
        ]
        new1 = Mux(st1.first, 0, acc1) + beat_s1
        new2 = Mux(st1.first, 0, acc2) + beat_s2
        with m.If(st1.valid):
            m.d.sync += [acc1.eq(new1), acc2.eq(new2), tok1.eq(new1), tok2.eq(new2)]
        m.d.sync += [s1sq.eq(tok1 * tok1), ds2.eq(times(tok2, d))]
        with m.If(st2.valid):
            with m.Switch(st2.slot):
                for s in range(slots):
                    with m.Case(s):
                        m.d.sync += [info[s].s1.eq(tok1), info[s].bank.eq(st2.bank),
                                     info[s].last.eq(st2.last)]
        m.submodules.vars = var_fifo = fifo.SyncFIFO(width=pl.var_bits, depth=slots)
        m.submodules.isqrt = isqrt = ISqrt(pl.var_bits, digits=pl.sqrt_digits)
        m.submodules.recip = recip = Reciprocal(root_bits, digits=pl.recip_digits)
        m.d.comb += [var_fifo.w_data.eq(ds2 - s1sq + eps[st3.bank]), var_fifo.w_en.eq(st3.valid)]
        wiring.connect(m, var_fifo.r_stream, isqrt.i)
        wiring.connect(m, isqrt.o, recip.i)

        # ---- output pass: token by token, straight on (stall-all pipeline) ----------------------
        en = ~self.o.valid | self.o.ready
        busy = Signal()
        slot = Signal(range(slots))
        beat = Signal(range(beats))
        row_last = Signal()
        load = Signal()
        issue = Signal()
        cur = Signal(slot_info)
        rec = Signal(RECIP_BITS + 2)
        k = Signal(range(root_bits + 1))
        m.d.comb += [
            row_last.eq(busy & (beat == beats - 1)),
            issue.eq(en & busy),
            load.eq(en & (~busy | row_last) & recip.o.valid),
            recip.o.ready.eq(load),
            release.eq(issue & row_last),
            x_rd.addr.eq(times(slot, beats) + beat), x_rd.en.eq(en),
        ]
        with m.If(issue):
            m.d.sync += beat.eq(Mux(row_last, 0, beat + 1))
            with m.If(row_last):
                m.d.sync += [busy.eq(0), slot.eq(advance(slot))]
        with m.If(load):
            m.d.sync += [busy.eq(1), cur.eq(info[Mux(busy, advance(slot), slot)]),
                         rec.eq(recip.o.payload.rec), k.eq(recip.o.payload.k)]
        # Per-token constants travel with the data; stage n holds a beat n + 1 cycles after
        # its read.
        stage = data.StructLayout({"valid": 1, "s1": signed(sum_bits), "rec": RECIP_BITS + 2,
                                   "k": range(root_bits + 1), "shift": 6, "bank": 1,
                                   "beat": range(beats), "last": 1})
        st = [Signal(stage, name=f"out_{n + 1}") for n in range(OUT_LATENCY)]
        with m.If(en):
            m.d.sync += [
                st[0].valid.eq(issue), st[0].s1.eq(cur.s1), st[0].rec.eq(rec), st[0].k.eq(k),
                st[0].shift.eq(shift[cur.bank]), st[0].bank.eq(cur.bank), st[0].beat.eq(beat),
                st[0].last.eq(row_last & cur.last),
            ]
            m.d.sync += [st[n + 1].eq(st[n]) for n in range(OUT_LATENCY - 1)]
        # Stages: 2 c, 3 c * rec, 4-5 z, 6 z * gain + bias, 7-8 y. The parameters are read
        # with stage 4, so they arrive with z.
        m.d.comb += [p_rd.addr.eq(Mux(st[3].bank, beats, 0) + st[3].beat), p_rd.en.eq(en)]
        # A bank is free once the batch's final beat has read its parameters.
        with m.If(en & st[3].valid & st[3].last):
            m.d.comb += bank_release.eq(1 << st[3].bank)
        m.d.comb += [self.o.valid.eq(st[-1].valid), self.o.payload.last.eq(st[-1].last)]
        for lane in range(lanes):
            c = Signal(signed(sum_bits + 11), name=f"c_{lane}")
            prod = Signal(signed(sum_bits + 11 + RECIP_BITS + 3), name=f"prod_{lane}")
            affine = Signal(signed(33), name=f"affine_{lane}")
            with m.If(en):
                m.d.sync += [
                    c.eq(times(x_rd.data[lane], d) - st[0].s1),
                    prod.eq(c * st[1].rec),
                ]
            z = round_shift_saturate(m, en, prod, st[2].k + (RECIP_BITS - NORM_FRAC),
                                     signed(16), lo=-32768, hi=32767, name=f"z_{lane}")
            with m.If(en):
                m.d.sync += affine.eq(z * p_rd.data.gain[lane] + p_rd.data.bias[lane])
            y = round_shift_saturate(m, en, affine, st[5].shift, signed(8), lo=-128, hi=127,
                                     name=f"y_{lane}")
            m.d.comb += self.o.payload.data[lane].eq(y)
        return m


def _next_start(last, ready):
    """First read of the output pass's next token: chained after ``last`` or from idle."""
    if ready <= last:
        return last + 1
    return max(last + 1, ready) + 1


def _cycles(pl, tokens):
    in_end, release = [], []
    sqrt_take = recip_take = -1
    out_load = out_last = -1
    for t in range(tokens):
        start = max(in_end[-1] + 1 if in_end else 0, release[t - pl.slots] if t >= pl.slots else 0)
        in_end.append(start + pl.beats - 1)
        # The square root takes an operand when its result is taken by the reciprocal, which
        # takes one when the output pass takes its result (the cycle of the pass's load).
        sqrt_take = max(in_end[t] + STATS_LATENCY, recip_take if t else 0)
        recip_take = max(sqrt_take + pl.sqrt_latency, out_load if t else 0)
        first = _next_start(out_last, recip_take + pl.recip_latency)
        out_load, out_last = first - 1, first + pl.beats - 1
        release.append(out_last)
    return out_last + OUT_LATENCY + 1


def exp_cycles(d, lanes, tokens):
    """Cycles from the first ``i`` beat to the last ``o`` beat for one batch at full rate.

    Parameters already loaded, ``i`` offers a beat every cycle, ``o`` always ready.
    Recurrences of the hardware (:func:`plan` sizes): a token enters once the
    previous one is in and the ring slot of the token ``slots`` before it is
    released (in the release cycle itself); its ``var + eps`` is ready
    :data:`STATS_LATENCY` cycles after its last beat; the square root takes it once
    its previous result went to the reciprocal, the reciprocal once the output pass
    took its previous result; the output pass goes on from a token's last read to
    the next token if its reciprocal was ready by then, else loads it the cycle it
    is ready and reads from the next; outputs leave :data:`OUT_LATENCY` cycles after
    their reads.
    """
    return _cycles(plan(d, lanes), tokens)
