"""Streaming integer LayerNorm: int16 tokens in, int8 out, exactly ``golden.layernorm.int_layernorm``.

::

    p (parameter images) --> 2 banks of {gain, bias} per channel, shift, eps
    i (token beats) --> token ring (3 rows) + sum, sum of squares
                         | token end: var + eps = D*S2 - S1*S1 + eps
                         +--> ISqrt --> Reciprocal --> output pass --> o
                                                       c = D*x - S1
                                                       z = sat16(round_shift(c*rec, k+5))
                                                       y = sat8(round_shift(z*gain + bias, shift))

A *batch* is the tokens of one layer: the n-th parameter image on ``p`` applies
to the n-th batch on ``i`` (``last`` on its final beat); the next image loads
into the other bank while a batch runs. The square root and the reciprocal are
bit-serial (:mod:`rtl.recip`): the token ring lets them work on one token while
the next streams in and the previous one streams out.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.layernorm import NORM_FRAC
from golden.softmax import RECIP_BITS

from .params import check_int, validating
from .recip import ISqrt, Reciprocal

__all__ = ["param_layout", "in_layout", "out_layout", "LayerNormUnit", "exp_cycles"]

#: Token buffers in the ring: input, square root / reciprocal, output pass.
SLOTS = 3
#: Register stages from a buffer read to ``o``: read, product, z, output.
OUT_STAGES = 4
#: ``eps`` is at most 2**40 (``golden.layernorm.int_layernorm``).
EPS_BITS = 41
VAR_BITS = 52


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


class LayerNormUnit(wiring.Component):
    """LayerNorm over tokens of ``d`` int16 elements, ``lanes`` per beat.

    Parameters
    ----------
    d : int, 2..1024
        Elements per token (the model dimension), a multiple of ``lanes``.
    lanes : int, 1..16

    Members
    -------
    p : In(stream.Signature(param_layout(lanes)))
        Parameter images of ``d // lanes`` beats (channels in order).
    i : In(stream.Signature(in_layout(lanes)))
        Tokens of ``d // lanes`` beats; ``last`` ends a batch.
    o : Out(stream.Signature(out_layout(lanes)))

    Throughput: a token of ``B = d // lanes`` beats every ``max(B + 1, 27)`` cycles in
    steady state (the bit-serial square root takes 27 cycles; the
    reciprocal's 18 overlap with the next token's root). Latency at full rate: a
    token's first output leaves ``B + 51`` cycles after its first beat. Backpressure: any stream may stall. Cycle model: :func:`exp_cycles`.
    Tested: d in {4, 6, 192, 384}, lanes 1..4, constant tokens (eps), int16 extremes.
    """

    def __init__(self, d, lanes):
        with validating(self):
            check_int("lanes", lanes, 1, 16)
            check_int("d", d, 2, 1024)
            if d % lanes:
                raise ValueError(f"d must be a multiple of lanes ({lanes}), not {d}")
        self._d, self._lanes = d, lanes
        super().__init__({
            "p": In(stream.Signature(param_layout(lanes))),
            "i": In(stream.Signature(in_layout(lanes))),
            "o": Out(stream.Signature(out_layout(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        d, lanes = self._d, self._lanes
        beats = d // lanes
        sum_bits = 16 + (d - 1).bit_length() + 1
        sq_bits = 31 + (d - 1).bit_length() + 1

        # ---- parameters: two banks ------------------------------------------------------
        chan = data.StructLayout({"gain": data.ArrayLayout(signed(16), lanes),
                                  "bias": data.ArrayLayout(signed(32), lanes)})
        m.submodules.params = params = memory.Memory(shape=chan, depth=2 * beats, init=[])
        p_wr = params.write_port()
        p_rd = params.read_port()
        shift = Signal(data.ArrayLayout(6, 2))
        eps = Signal(data.ArrayLayout(EPS_BITS, 2))
        bank_full = Signal(2)
        bank_release = Signal(2)
        load_bank = Signal()
        load_beat = Signal(range(beats))
        load_done = Signal()
        m.d.comb += [
            self.p.ready.eq(~bank_full.bit_select(load_bank, 1)),
            p_wr.addr.eq(Mux(load_bank, beats, 0) + load_beat),
            p_wr.data.gain.eq(self.p.payload.gain),
            p_wr.data.bias.eq(self.p.payload.bias),
            p_wr.en.eq(self.p.valid & self.p.ready),
        ]
        with m.If(self.p.valid & self.p.ready):
            m.d.sync += load_beat.eq(Mux(load_beat == beats - 1, 0, load_beat + 1))
            with m.If(load_beat == beats - 1):
                m.d.comb += load_done.eq(1)
                m.d.sync += [load_bank.eq(~load_bank), shift[load_bank].eq(self.p.payload.shift),
                             eps[load_bank].eq(self.p.payload.eps)]
        m.d.sync += bank_full.eq((bank_full | Mux(load_done, 1 << load_bank, 0)) & ~bank_release)

        # ---- token ring and statistics -------------------------------------------------
        m.submodules.tokens = tokens = memory.Memory(
            shape=data.ArrayLayout(signed(16), lanes), depth=SLOTS * beats, init=[])
        x_wr = tokens.write_port()
        x_rd = tokens.read_port()
        m.submodules.isqrt = isqrt = ISqrt(VAR_BITS)
        m.submodules.recip = recip = Reciprocal(VAR_BITS // 2)
        wiring.connect(m, isqrt.o, recip.i)
        slot_s1 = Signal(data.ArrayLayout(signed(sum_bits), SLOTS))
        slot_bank = Signal(SLOTS)
        slot_last = Signal(SLOTS)
        held = Signal(range(SLOTS + 1))
        row_in = Signal()
        release = Signal()
        in_slot = Signal(range(SLOTS))
        in_beat = Signal(range(beats))
        in_bank = Signal()
        s1 = Signal(signed(sum_bits))
        s2 = Signal(unsigned(sq_bits))
        pending = Signal()                        # var + eps waits for the square root
        pending_var = Signal(VAR_BITS)
        beat_s1 = sum(self.i.payload.data[n] for n in range(lanes))
        beat_s2 = sum(self.i.payload.data[n] * self.i.payload.data[n] for n in range(lanes))
        new_s1 = Mux(in_beat == 0, 0, s1) + beat_s1
        new_s2 = Mux(in_beat == 0, 0, s2) + beat_s2
        token_end = in_beat == beats - 1
        m.d.comb += [
            self.i.ready.eq(bank_full.bit_select(in_bank, 1) & (held < SLOTS) &
                            ~(token_end & pending)),
            x_wr.addr.eq(in_slot * beats + in_beat),
            x_wr.data.eq(self.i.payload.data),
            x_wr.en.eq(self.i.valid & self.i.ready),
            isqrt.i.valid.eq(pending),
            isqrt.i.payload.eq(pending_var),
        ]
        with m.If(isqrt.i.valid & isqrt.i.ready):
            m.d.sync += pending.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [s1.eq(new_s1), s2.eq(new_s2),
                         in_beat.eq(Mux(token_end, 0, in_beat + 1))]
            with m.If(token_end):
                m.d.comb += row_in.eq(1)
                m.d.sync += [
                    pending.eq(1),
                    pending_var.eq(d * new_s2 - new_s1 * new_s1 + eps[in_bank]),
                    slot_s1[in_slot].eq(new_s1),
                    slot_bank.bit_select(in_slot, 1).eq(in_bank),
                    slot_last.bit_select(in_slot, 1).eq(self.i.payload.last),
                    in_slot.eq(Mux(in_slot == SLOTS - 1, 0, in_slot + 1)),
                ]
                with m.If(self.i.payload.last):
                    m.d.sync += in_bank.eq(~in_bank)
        m.d.sync += held.eq(held + row_in - release)

        # ---- output pass (stall-all pipeline) -------------------------------------------
        en = ~self.o.valid | self.o.ready
        b_busy = Signal()
        b_slot = Signal(range(SLOTS))
        b_beat = Signal(range(beats))
        b_rec = Signal(RECIP_BITS + 2)
        b_k = Signal(range(VAR_BITS // 2 + 1))
        valid = Signal(OUT_STAGES)
        b_start = ~b_busy & recip.o.valid
        issue = b_busy & en
        b_bank = slot_bank.bit_select(b_slot, 1)
        m.d.comb += [
            recip.o.ready.eq(b_start),
            x_rd.addr.eq(b_slot * beats + b_beat), x_rd.en.eq(en),
            p_rd.addr.eq(Mux(b_bank, beats, 0) + b_beat), p_rd.en.eq(en),
        ]
        with m.If(b_start):
            m.d.sync += [b_busy.eq(1), b_beat.eq(0), b_rec.eq(recip.o.payload.rec),
                         b_k.eq(recip.o.payload.k)]
        batch_end = Signal()
        m.d.comb += batch_end.eq(slot_last.bit_select(b_slot, 1) & (b_beat == beats - 1))
        with m.If(issue):
            m.d.sync += b_beat.eq(b_beat + 1)
            with m.If(b_beat == beats - 1):
                m.d.comb += release.eq(1)
                m.d.sync += [b_busy.eq(0), b_slot.eq(Mux(b_slot == SLOTS - 1, 0, b_slot + 1))]
                with m.If(batch_end):
                    m.d.comb += bank_release.eq(1 << b_bank)
        # Per-token constants travel with the data.
        stage = data.StructLayout({"s1": signed(sum_bits), "rec": RECIP_BITS + 2,
                                   "k": range(VAR_BITS // 2 + 1), "shift": 6, "last": 1})
        st = [Signal(stage, name=f"stage_{n + 1}") for n in range(OUT_STAGES)]
        gain2, gain3 = (Signal(data.ArrayLayout(signed(16), lanes), name=n) for n in ("gain2", "gain3"))
        bias2, bias3 = (Signal(data.ArrayLayout(signed(32), lanes), name=n) for n in ("bias2", "bias3"))
        with m.If(en):
            m.d.sync += [
                valid.eq(Cat(issue, valid[:-1])),
                st[0].s1.eq(slot_s1[b_slot]), st[0].rec.eq(b_rec), st[0].k.eq(b_k),
                st[0].shift.eq(shift[b_bank]), st[0].last.eq(batch_end),
                gain2.eq(p_rd.data.gain), bias2.eq(p_rd.data.bias),
                gain3.eq(gain2), bias3.eq(bias2),
            ]
            m.d.sync += [st[n + 1].eq(st[n]) for n in range(OUT_STAGES - 1)]
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.last.eq(st[-1].last)]
        for lane in range(lanes):
            c = Signal(signed(sum_bits + 11), name=f"c_{lane}")
            prod = Signal(signed(sum_bits + 11 + RECIP_BITS + 3), name=f"prod_{lane}")
            z = Signal(signed(16), name=f"z_{lane}")
            y = Signal(signed(8), name=f"y_{lane}")
            m.d.comb += c.eq(d * x_rd.data[lane] - st[0].s1)
            zsh = st[1].k + (RECIP_BITS - NORM_FRAC)
            zr = (prod + ((1 << zsh) >> 1)) >> zsh
            affine = z * gain3[lane] + bias3[lane]
            yr = (affine + ((1 << st[2].shift) >> 1)) >> st[2].shift
            with m.If(en):
                m.d.sync += [
                    prod.eq(c * st[0].rec),
                    z.eq(Mux(zr > 32767, 32767, Mux(zr < -32768, -32768, zr))),
                    y.eq(Mux(yr > 127, 127, Mux(yr < -128, -128, yr))),
                ]
            m.d.comb += self.o.payload.data[lane].eq(y)
        return m


def exp_cycles(d, lanes, tokens):
    """Cycles from the first ``i`` beat to the last ``o`` beat for one batch at full rate.

    Parameters already loaded, ``i`` offers a beat every cycle, ``o`` always ready.
    Recurrences of the hardware: a token enters when a ring slot is free; its last
    beat waits until the previous token's ``var + eps`` went to the square root; the
    square root (``VAR_BITS/2 + 1`` cycles) and the reciprocal (18) each take the
    next operand the cycle after their result is taken; the output pass starts when
    the reciprocal is ready, issues ``B`` reads, and results leave 4 cycles later.
    """
    beats = d // lanes
    sqrt_latency, recip_latency = VAR_BITS // 2 + 1, Reciprocal.LATENCY
    in_end, release = [], []
    sqrt_take, sqrt_idle, recip_idle, b_idle, last = -1, 0, 0, 0, -1
    for t in range(tokens):
        start = max(in_end[-1] + 1 if in_end else 0, release[t - SLOTS] + 1 if t >= SLOTS else 0)
        end = max(start + beats - 1, sqrt_take + 1)
        in_end.append(end)
        sqrt_take = max(end + 1, sqrt_idle)
        recip_take = max(sqrt_take + sqrt_latency, recip_idle)
        sqrt_idle = recip_take
        b_start = max(recip_take + recip_latency, b_idle)
        recip_idle = b_start
        release.append(b_start + beats)
        b_idle = b_start + beats + 1
        last = b_start + beats + OUT_STAGES
    return last + 1
