"""Streaming attention with log-domain probabilities: QK^T on MACs, P.V by shifted adds.

Exactly ``golden.softmax.attention_from_scores`` per head (``docs/arithmetic.md``,
attention), with the codes chosen at elaboration (``AttentionConfig.codes``)::

    s = q @ k.T (int32)  ->  u = requantize(s, mult, shift, bits=16)
    "log2":  c = log2_codes(u); out = attention_pv(c, v):
             num = sum v << (14 - c), den = sum 2**(14 - c)
    "sqrt2": c = sqrt2_codes(u); out = attention_pv_sqrt2(c, v): even and odd codes
             shift v << (7 - ceil(c/2)) into two numerators, num_e and num_o;
             den = sum (2**15 or SQRT2_Q15 for odd c) << (7 - ceil(c/2)) (shifted constants);
             num = num_e << 15 + num_o * SQRT2_Q15 at the output (Dp constant multiplies)
    "mant4": c = mant4_codes(u); out = attention_pv_mant4(c, v):
             num = sum (v * MANT_TABLE[c % 64]) << (14 - c // 64) (8 x 5-bit products
             as gated shifted adds), den = sum MANT_TABLE[c % 64] << (14 - c // 64)
    out = sat8(round_shift(num * rec, k + 15)), (rec, k) = normalized_reciprocal(den)

Dataflow for one group of ``H`` heads (all ``H`` heads run side by side, one lane
each; every beat carries ``Dp`` dims of each of the ``H`` heads). Two engines work
on consecutive blocks of R query rows at once::

    Q loader: q beats --> Q blocks (two, alternating), filled while pass 1 reads the other
              (QueryLoader, a Component of its own)
    front:  k, v beats side by side --> K and V buffers (N rows x head_dim, on chip)
            per block: pass 1: key j = 0..N-1 broadcast to the R rows: R x Dp MACs per head,
                               s -> u (R requantizers) -> score buffer (two, alternating),
                               running max per row
                       hand the block to the back
    back:   pass 2: key j again: c = min(round_shift(max - u, 6), 15) per row (log2),
                    num[r] += v_j << (14 - c)  (R x Dp shift-add lanes, no DSP; mant4
                    adds v_j times its 5-bit mantissa as gated shifted adds),
                    den[r] += 2**(14 - c)
            normalise: R bit-serial reciprocals per head at once, then
                       out = num * rec (Dp multipliers per head) --> o, row by row

Pass 1 of block b+1 runs while pass 2 and the output of block b do. The key is
broadcast to all R rows of a block, so K and V are each read once per block at
one slice per cycle with no bubbles: the effect of UbiMoE's skewed query blocks,
without the skew.

Cycle model: :func:`exp_cycles`.
"""

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden.softmax import (ATTENTION_CODES, CODE_ZERO, EXP2_BITS, LOG2_FRAC, MANT_BITS,
                            MANT_CODE_ZERO, MANT_TABLE, RECIP_BITS, SQRT2_Q15)

from ..params import ConfigComponent, check_int
from .recip import Reciprocal
from .rounding import ROUND_STAGES, round_shift_saturate

__all__ = ["AttentionConfig", "beat_layout", "QueryLoader", "AttentionKernel", "exp_cycles"]

SCORE_BITS = 32
#: Pass 1's cycles after a read issue (its valid bits): the read data, the dot product's
#: sum, the product with the requantizer, then the stages of
#: :func:`~rtl.compute.rounding.round_shift_saturate`; the last holds the score ``u``.
P1_STAGES = 3 + ROUND_STAGES
#: Pass 2's cycles after a read issue: the read data (the code of (row, key) is registered
#: from it), then the code (the numerators and the denominator are registered from it).
P2_STAGES = 2
#: The output's register stages: the row's numerators and reciprocal selected, then
#: ``num * rec`` through :func:`~rtl.compute.rounding.round_shift_saturate`.
OUT_STAGES = 1 + ROUND_STAGES


def beat_layout(h, dp):
    """One beat: ``dp`` int8 dims of each of ``h`` heads; ``last`` ends a tensor (K, V, Q) or output."""
    return data.StructLayout({"data": data.ArrayLayout(data.ArrayLayout(signed(8), dp), h),
                              "last": 1})


@dataclass(frozen=True)
class AttentionConfig:
    """Parameters of an :class:`AttentionKernel`.

    Parameters
    ----------
    r : int, 1..128
        Query rows in flight (a block).
    dp : int, 1..64
        Head dims per cycle; divides ``head_dim``.
    h : int, 1..16
        Heads side by side.
    head_dim : int, 1..256
    max_tokens : int, 1..1024
        Largest N (the K, V and score buffers).
    codes : str, one of ``golden.softmax.ATTENTION_CODES``
        ``"log2"`` (octave steps), ``"sqrt2"`` (the reference's log-sqrt2 codes:
        a second numerator per lane, a wider denominator and reciprocal, ``Dp``
        constant multiplies per head at the output) or ``"mant4"`` (the exponential
        with a 4-bit mantissa: an 8 x 5-bit product per P.V lane in LUTs, numerators
        and denominator 4 bits wider). Same cycles for all three.
    """

    r: int
    dp: int
    h: int
    head_dim: int = 64
    max_tokens: int = 577
    codes: str = "log2"

    def __post_init__(self):
        check_int("r", self.r, 1, 128)
        check_int("h", self.h, 1, 16)
        check_int("head_dim", self.head_dim, 1, 256)
        check_int("dp", self.dp, 1, 64)
        if self.head_dim % self.dp:
            raise ValueError(f"dp must divide head_dim ({self.head_dim}), not {self.dp}")
        check_int("max_tokens", self.max_tokens, 1, 1024)
        if self.codes not in ATTENTION_CODES:
            raise ValueError(f"codes must be one of {', '.join(ATTENTION_CODES)}, not {self.codes!r}")

    @property
    def slices(self):
        """Beats per token row: ``head_dim / dp``."""
        return self.head_dim // self.dp

    @property
    def lift_max(self):
        """log2 of the largest weight of ``v`` in P.V: 14 (log2, code 0), 7 (sqrt2, code 0)
        or 18 (mant4: mantissa 16 at octave 0)."""
        return {"log2": CODE_ZERO - 1, "sqrt2": CODE_ZERO // 2,
                "mant4": CODE_ZERO - 1 + MANT_BITS}[self.codes]

    @property
    def num_bits(self):
        """Bits of a signed numerator lane: it reaches ``-max_tokens * 128 << lift_max``."""
        return (self.max_tokens * 128 << self.lift_max).bit_length()

    @property
    def den_bits(self):
        """Bits of a row's denominator: ``max_tokens`` times the largest weight."""
        top = 1 << (self.lift_max + (EXP2_BITS if self.codes == "sqrt2" else 0))
        return (self.max_tokens * top).bit_length()

    @property
    def macs(self):
        return self.h * self.r * self.dp


class QueryLoader(ConfigComponent):
    """Query rows into the two Q blocks, ahead of pass 1 (the attention kernel's Q loader).

    A block is up to ``r`` rows of ``slices`` beats; it ends after ``r`` rows or at a beat
    with ``last`` (the group's final row). Blocks alternate between the two halves of the
    Q memory (half ``p`` at words ``p * slices ..``); word ``s`` of a half holds slice
    ``s`` of every row of the block (row ``j`` at element ``j``).

    Members
    -------
    q : In(stream.Signature(beat_layout(h, dp)))
        Query rows in order.
    blocks : In(memory.WritePort.Signature(...))
        Driven: the write port of the Q memory (``data.ArrayLayout(lane, r)`` words,
        one row per write-enable bit).
    full : Out(2)
        Half ``p`` holds a loaded block: set the cycle after its last beat.
    release : In(2)
        Pulse: pass 1 has read half ``p`` for the last time (clears ``full[p]``).

    Throughput: one beat per cycle while the half it fills is free; ``q.ready`` is low
    while ``full`` holds that half.
    """

    config_type = AttentionConfig

    def members(self, config):
        lane = beat_layout(config.h, config.dp).members["data"]
        return {
            "q": In(stream.Signature(beat_layout(config.h, config.dp))),
            "blocks": In(memory.WritePort.Signature(
                addr_width=ceil_log2(2 * config.slices), shape=data.ArrayLayout(lane, config.r),
                granularity=1)),
            "full": Out(2),
            "release": In(2),
        }

    def elaborate(self, platform):
        m = Module()
        R, S = self._config.r, self._config.slices
        q_par = Signal()
        q_row = Signal(range(R))
        q_sl = Signal(range(S))
        q_wr = self.blocks
        m.d.comb += [
            q_wr.addr.eq(Mux(q_par, S, 0) + q_sl),
            q_wr.data.eq(Cat(*([self.q.payload.data.as_value()] * R))),
        ]
        q_take = self.q.valid & ~self.full.bit_select(q_par, 1)
        q_block_end = q_take & (q_sl == S - 1) & ((q_row == R - 1) | self.q.payload.last)
        m.d.comb += [self.q.ready.eq(~self.full.bit_select(q_par, 1)),
                     q_wr.en.eq(Mux(q_take, 1 << q_row, 0))]
        m.d.sync += self.full.eq((self.full | Mux(q_block_end, Mux(q_par, 0b10, 0b01), 0))
                                 & ~self.release)
        with m.If(q_take):
            m.d.sync += q_sl.eq(Mux(q_sl == S - 1, 0, q_sl + 1))
            with m.If(q_sl == S - 1):
                m.d.sync += q_row.eq(q_row + 1)
            with m.If(q_block_end):
                m.d.sync += [q_row.eq(0), q_par.eq(~q_par)]
        return m


class AttentionKernel(ConfigComponent):
    """Attention of ``H`` heads at a time over ``N <= max_tokens`` tokens (see the module docstring).

    Members
    -------
    mult, shift : In(15), In(6)
        The score requantizer of the layer (``golden.quant.dyadic`` of
        ``s_q * s_k / sqrt(head_dim) * log2(e) * 2**6``); hold them while a group runs.
    k, v, q : In(stream.Signature(beat_layout(h, dp)))
        Per head group: K (N rows of ``head_dim / dp`` beats, ``last`` on the final
        beat: it sets N) and V (same; taken side by side with K), then Q in blocks of R
        rows (rows in order).
    o : Out(stream.Signature(beat_layout(h, dp)))
        The output rows in order, ``head_dim / dp`` beats each; ``last`` on the group's
        final beat.

    Backpressure: every stream may stall; the kernel waits. Cycle model:
    :func:`exp_cycles`.
    """

    config_type = AttentionConfig

    def members(self, config):
        layout = beat_layout(config.h, config.dp)
        return {
            "mult": In(15), "shift": In(6),
            "k": In(stream.Signature(layout)), "v": In(stream.Signature(layout)),
            "q": In(stream.Signature(layout)), "o": Out(stream.Signature(layout)),
        }

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, DP, H, S, NMAX = cfg.r, cfg.dp, cfg.h, cfg.slices, cfg.max_tokens
        NUM_BITS, DEN_BITS = cfg.num_bits, cfg.den_bits
        SQRT2, MANT = cfg.codes == "sqrt2", cfg.codes == "mant4"
        if MANT:
            table = Array(Const(int(x), range(int(MANT_TABLE.max()) + 1)) for x in MANT_TABLE)
        lane = data.ArrayLayout(data.ArrayLayout(signed(8), DP), H)
        m.submodules.kbuf = kbuf = memory.Memory(shape=lane, depth=NMAX * S, init=[])
        # Two V buffers: a group's V loads while the back's pass 2 still reads the previous one.
        m.submodules.vbuf = vbuf = memory.Memory(shape=lane, depth=2 * NMAX * S, init=[])
        # Two Q blocks and two score buffers: pass 1 of block b+1 runs beside pass 2 of block b.
        m.submodules.qbuf = qbuf = memory.Memory(shape=data.ArrayLayout(lane, R), depth=2 * S,
                                                 init=[])
        uword = data.ArrayLayout(data.ArrayLayout(signed(16), R), H)
        m.submodules.ubuf = ubuf = memory.Memory(shape=uword, depth=2 * NMAX, init=[])
        k_wr, v_wr, u_wr = kbuf.write_port(), vbuf.write_port(), ubuf.write_port()
        m.submodules.q_loader = q_loader = QueryLoader(cfg)
        wiring.connect(m, wiring.flipped(self.q), q_loader.q)
        wiring.connect(m, q_loader.blocks, qbuf.write_port(granularity=1))
        k_rd, v_rd, q_rd, u_rd = (kbuf.read_port(), vbuf.read_port(), qbuf.read_port(),
                                  ubuf.read_port())

        # ---- front (loads and pass 1) and back (pass 2, normalisation, output) counters ----
        n = Signal(range(NMAX + 1))              # tokens of the group (front)
        addr = Signal(range(NMAX * S + 1))       # front: row * S + slice
        row = Signal(range(NMAX + 1))
        sl = Signal(range(S))
        block = Signal(range(NMAX + R + 1))      # first row of the front's block
        rows = Signal(range(R + 1))              # rows of the front's block
        q_full = q_loader.full                   # Q block loaded, not yet read by pass 1
        q_release = Signal()                     # pass 1 read its Q block for the last time
        f_par = Signal()                          # the front's Q / score buffer
        v_addr = Signal(range(NMAX * S + 1))     # V rows * S + slice, loaded beside K
        k_done, v_done = Signal(), Signal()      # K / V of the group fully loaded
        last_slice = sl == S - 1
        b_addr = Signal(range(NMAX * S + 1))     # back: row * S + slice
        b_row = Signal(range(NMAX + 1))
        b_sl = Signal(range(S))
        b_n = Signal(range(NMAX + 1))
        b_rows = Signal(range(R + 1))
        b_par = Signal()
        b_glast = Signal()                        # the back's block ends the group
        b_vpar = Signal()                         # the back's V buffer
        g_par = Signal()                          # the front's V buffer (per group)
        b_last_slice = b_sl == S - 1
        out_row = Signal(range(R))
        # Hand-over of a block from the front to the back, and the score buffers' state.
        mail_full = Signal()
        mail = Signal(data.StructLayout({"par": 1, "rows": range(R + 1), "n": range(NMAX + 1),
                                         "glast": 1, "vpar": 1}))
        u_free = Signal(2, init=0b11)
        u_release = Signal(2)

        def step():
            m.d.sync += [addr.eq(addr + 1), sl.eq(Mux(last_slice, 0, sl + 1)),
                         row.eq(Mux(last_slice, row + 1, row))]

        def rewind():
            m.d.sync += [addr.eq(0), sl.eq(0), row.eq(0)]

        def b_step():
            m.d.sync += [b_addr.eq(b_addr + 1), b_sl.eq(Mux(b_last_slice, 0, b_sl + 1)),
                         b_row.eq(Mux(b_last_slice, b_row + 1, b_row))]

        # ---- per-row state ---------------------------------------------------------------
        run_max = [[[Signal(signed(16), name=f"max{p}_{hh}_{r}") for r in range(R)]
                    for hh in range(H)] for p in range(2)]
        # num[parity][head][row][slice]: parity 1 (odd sqrt2 codes) only with codes="sqrt2".
        num = [[[[Signal(data.ArrayLayout(signed(NUM_BITS), DP), name=f"num{p}_{hh}_{r}_{t}")
                  for t in range(S)] for r in range(R)] for hh in range(H)]
               for p in range(1 + SQRT2)]
        den = [[Signal(DEN_BITS, name=f"den_{hh}_{r}") for r in range(R)] for hh in range(H)]
        acc = [[Signal(signed(SCORE_BITS), name=f"acc_{hh}_{r}") for r in range(R)] for hh in range(H)]
        prod = [[Signal(signed(SCORE_BITS + 16), name=f"sp_{hh}_{r}") for r in range(R)]
                for hh in range(H)]
        recips = [[Reciprocal(DEN_BITS) for r in range(R)] for hh in range(H)]
        for hh in range(H):
            for r in range(R):
                m.submodules[f"recip_{hh}_{r}"] = recips[hh][r]
        rec = [[Signal(RECIP_BITS + 2, name=f"rec_{hh}_{r}") for r in range(R)] for hh in range(H)]
        rk = [[Signal(range(DEN_BITS + 1), name=f"k_{hh}_{r}") for r in range(R)] for hh in range(H)]

        p1_issue, p2_issue, f_clear, b_clear, out_issue, recip_start = (Signal(name=x) for x in (
            "p1_issue", "p2_issue", "f_clear", "b_clear", "out_issue", "recip_start"))
        # Pass 1 stages: [0] read data, [1] sum, [2] product, [3, 4] the score u.
        p1_v = Signal(P1_STAGES)
        p1_first, p1_last = Signal(), Signal(P1_STAGES)
        p1_key = [Signal(range(NMAX), name=f"p1_key_{x}") for x in range(P1_STAGES)]
        p1_u = P1_STAGES - 1                      # the stage that holds u
        # Pass 2 stages: [0] read data, the code; [1] numerators and denominator.
        p2_v, p2_first = Signal(P2_STAGES), Signal(P2_STAGES)
        v_held = Signal(lane)                     # V's read data, with the codes
        m.d.sync += [p1_v.eq(Cat(p1_issue, p1_v[:-1])), p1_first.eq(sl == 0),
                     p1_last.eq(Cat(p1_issue & last_slice, p1_last[:-1])),
                     p1_key[0].eq(row), *(p1_key[x + 1].eq(p1_key[x]) for x in range(p1_u)),
                     p2_v.eq(Cat(p2_issue, p2_v[:-1])),
                     p2_first.eq(Cat(b_sl == 0, p2_first[:-1])), v_held.eq(v_rd.data)]
        m.d.comb += [k_rd.addr.eq(addr), q_rd.addr.eq(Mux(f_par, S, 0) + sl),
                     v_rd.addr.eq(Mux(b_vpar, NMAX * S, 0) + b_addr),
                     u_rd.addr.eq(Mux(b_par, NMAX, 0) + b_row),
                     u_wr.addr.eq(Mux(f_par, NMAX, 0) + p1_key[p1_u]),
                     u_wr.en.eq(p1_v[p1_u] & p1_last[p1_u])]

        for hh in range(H):
            for r in range(R):
                # Pass 1 (front), stage 1: the Dp-wide dot product, a key's sum ends with its last
                # slice; stage 2: times the requantizer; stages 3-4: round and saturate; then
                # keep the max.
                dot = sum(k_rd.data[hh][d] * q_rd.data[r][hh][d] for d in range(DP))
                with m.If(p1_v[0]):
                    m.d.sync += acc[hh][r].eq(Mux(p1_first, 0, acc[hh][r]) + dot)
                with m.If(p1_v[1] & p1_last[1]):
                    m.d.sync += prod[hh][r].eq(acc[hh][r] * self.mult)
                u = round_shift_saturate(m, 1, prod[hh][r], self.shift, signed(16), lo=-32768,
                                         hi=32767, name=f"u_{hh}_{r}")
                m.d.comb += u_wr.data[hh][r].eq(u)
                for p in range(2):
                    with m.If(f_clear & (f_par == p)):
                        m.d.sync += run_max[p][hh][r].eq(-32768)
                    with m.Elif(p1_v[p1_u] & p1_last[p1_u] & (f_par == p)
                                & (u > run_max[p][hh][r])):
                        m.d.sync += run_max[p][hh][r].eq(u)

                # Pass 2 (back): the code of (row r, key j), then v << lift into the rotating
                # numerator slices and the weight into the denominator, without DSPs.
                # log2: lift = 14 - c, weight 2**lift. sqrt2: lift = 7 - ceil(c / 2), odd codes
                # into the second numerator, weight (2**15 or SQRT2_Q15 if odd) << lift.
                # mant4: the code is the distance itself (capped at 15 octaves), the weight
                # MANT_TABLE[c % 64] << (14 - c // 64) and v is multiplied by the mantissa.
                # Stage 1: the code, from the score read; stage 2: the sums.
                d_log = Signal(unsigned(17), name=f"dlog_{hh}_{r}")
                zero_code = MANT_CODE_ZERO if MANT else CODE_ZERO
                code = Signal(range(zero_code + 1), name=f"code_{hh}_{r}")
                m.d.comb += d_log.eq(Mux(b_par, run_max[1][hh][r], run_max[0][hh][r])
                                     - u_rd.data[hh][r])
                if MANT:
                    code_r = d_log
                else:
                    code_r = (d_log + (1 << (LOG2_FRAC - 1 - SQRT2))) >> (LOG2_FRAC - SQRT2)
                m.d.sync += code.eq(Mux(code_r > zero_code, zero_code, code_r))
                is_zero = code == zero_code
                lift = Signal(range(CODE_ZERO), name=f"lift_{hh}_{r}")
                weight = Signal(DEN_BITS, name=f"w_{hh}_{r}")
                odd = code[0] if SQRT2 else Const(0)
                mantissa = Const(1)
                if SQRT2:
                    m.d.comb += lift.eq(CODE_ZERO // 2 - ((code + 1) >> 1))
                    unit_w = Mux(odd, SQRT2_Q15, 1 << EXP2_BITS)
                elif MANT:
                    mantissa = Signal(range(int(MANT_TABLE.max()) + 1), name=f"mant_{hh}_{r}")
                    m.d.comb += [lift.eq(CODE_ZERO - 1 - code[LOG2_FRAC:]),
                                 mantissa.eq(table[code[:LOG2_FRAC]])]
                    unit_w = mantissa
                else:
                    m.d.comb += lift.eq(CODE_ZERO - 1 - code)
                    unit_w = Const(1)
                m.d.comb += weight.eq(Mux(is_zero, 0, unit_w << lift))
                heads = [num[p][hh][r] for p in range(1 + SQRT2)]
                with m.If(b_clear):
                    m.d.sync += den[hh][r].eq(0)
                    m.d.sync += [head[t].eq(0) for head in heads for t in range(S)]
                with m.Elif(p2_v[-1]):
                    with m.If(p2_first[-1]):
                        m.d.sync += den[hh][r].eq(den[hh][r] + weight)
                    for p, head in enumerate(heads):
                        for d in range(DP):
                            value = v_held[hh][d]
                            # mant4: v * mantissa as gated shifted adds (LUT logic, kept
                            # off the DSPs the linear kernel needs).
                            scaled = (sum(Mux(mantissa[b], value << b, 0)
                                          for b in range(len(mantissa))) if MANT else value)
                            shifted = Mux(is_zero | (odd != p), 0, scaled << lift)
                            m.d.sync += head[S - 1][d].eq(head[0][d] + shifted)
                        m.d.sync += [head[t].eq(head[t + 1]) for t in range(S - 1)]
                with m.Elif(out_issue & (out_row == r)):
                    for head in heads:
                        m.d.sync += [head[S - 1].eq(head[0])] + [head[t].eq(head[t + 1])
                                                                 for t in range(S - 1)]

                # Normalisation: one reciprocal per row, started for all rows at once.
                unit = recips[hh][r]
                m.d.comb += [unit.i.valid.eq(recip_start), unit.i.payload.eq(den[hh][r])]
                with m.If(unit.o.valid & unit.o.ready):
                    m.d.sync += [rec[hh][r].eq(unit.o.payload.rec), rk[hh][r].eq(unit.o.payload.k)]

        all_recips = Cat(*(recips[hh][r].o.valid for hh in range(H) for r in range(R))).all()

        # ---- output: num * rec of the current row, rounded and saturated ---------------------
        # OUT_STAGES stages that advance together unless o stalls: the issued row's
        # numerators and reciprocal, then num * rec through round_shift_saturate.
        o_valid, o_last, issue_last = Signal(OUT_STAGES), Signal(OUT_STAGES), Signal()
        en = ~o_valid[-1] | self.o.ready
        m.d.comb += [self.o.valid.eq(o_valid[-1]), self.o.payload.last.eq(o_last[-1])]
        with m.If(en):
            m.d.sync += [o_valid.eq(Cat(out_issue, o_valid[:-1])),
                         o_last.eq(Cat(issue_last, o_last[:-1]))]
        for hh in range(H):
            sel_rec = Signal(RECIP_BITS + 2, name=f"sel_rec_{hh}")
            sel_k = Signal(range(DEN_BITS + 1), name=f"sel_k_{hh}")
            sel_num = [Signal(data.ArrayLayout(signed(NUM_BITS), DP), name=f"sel_num{p}_{hh}")
                       for p in range(1 + SQRT2)]
            with m.If(en), m.Switch(out_row):
                for r in range(R):
                    with m.Case(r):
                        m.d.sync += [sel_rec.eq(rec[hh][r]), sel_k.eq(rk[hh][r])]
                        m.d.sync += [sel.eq(num[p][hh][r][0]) for p, sel in enumerate(sel_num)]
            for d in range(DP):
                total = sel_num[0][d]
                if SQRT2:
                    total = (sel_num[0][d] << EXP2_BITS) + sel_num[1][d] * SQRT2_Q15
                m.d.comb += self.o.payload.data[hh][d].eq(round_shift_saturate(
                    m, en, total * sel_rec, sel_k + RECIP_BITS, signed(8), lo=-128, hi=127,
                    name=f"o_{hh}_{d}"))

        # ---- front: K, V, then per block Q and pass 1 ------------------------------------------
        m.d.comb += [
            k_wr.addr.eq(addr), k_wr.data.eq(self.k.payload.data),
            v_wr.addr.eq(Mux(g_par, NMAX * S, 0) + v_addr), v_wr.data.eq(self.v.payload.data),
            q_loader.release.eq(Mux(q_release, Mux(f_par, 0b10, 0b01), 0)),
        ]

        m.d.sync += u_free.eq((u_free | u_release) & ~Mux(f_clear, Mux(f_par, 0b10, 0b01), 0))
        with m.FSM(name="front"):
            with m.State("LOAD_KV"):
                # K and V arrive side by side. K is read only by this front's pass 1. V goes to
                # the buffer of the group two before, whose last block the back took before
                # this front could hand over the previous group's last block: every pass 2
                # read of it is done, or runs ahead of these writes (pass 2 never stalls).
                k_take = self.k.valid & ~k_done
                v_take = self.v.valid & ~v_done
                k_end = k_take & self.k.payload.last
                v_end = v_take & self.v.payload.last
                m.d.comb += [self.k.ready.eq(~k_done), k_wr.en.eq(k_take),
                             self.v.ready.eq(~v_done), v_wr.en.eq(v_take)]
                with m.If(k_take):
                    step()
                    with m.If(self.k.payload.last):
                        m.d.sync += [n.eq(row + 1), block.eq(0), k_done.eq(1)]
                        rewind()
                with m.If(v_take):
                    m.d.sync += v_addr.eq(v_addr + 1)
                    with m.If(self.v.payload.last):
                        m.d.sync += [v_addr.eq(0), v_done.eq(1)]
                with m.If((k_done | k_end) & (v_done | v_end)):
                    n_now = Mux(k_end, row + 1, n)
                    m.d.sync += [k_done.eq(0), v_done.eq(0), rows.eq(Mux(n_now < R, n_now, R))]
                    m.next = "P1_WAIT"
            with m.State("P1_WAIT"):
                with m.If(u_free.bit_select(f_par, 1) & q_full.bit_select(f_par, 1)):
                    m.d.comb += f_clear.eq(1)
                    m.next = "PASS1"
            with m.State("PASS1"):
                m.d.comb += p1_issue.eq(1)
                step()
                with m.If(last_slice & (row == n - 1)):
                    m.d.comb += q_release.eq(1)
                    m.next = "P1_DRAIN"
            with m.State("P1_DRAIN"):
                rewind()
                with m.If(p1_v == 0):
                    m.next = "HANDOFF"
            with m.State("HANDOFF"):
                with m.If(~mail_full):
                    glast = block + R >= n
                    m.d.sync += [mail_full.eq(1), mail.par.eq(f_par), mail.rows.eq(rows),
                                 mail.n.eq(n), mail.glast.eq(glast), mail.vpar.eq(g_par),
                                 g_par.eq(g_par ^ glast), f_par.eq(~f_par), block.eq(block + R),
                                 rows.eq(Mux(n - (block + R) < R, n - (block + R), R))]
                    with m.If(glast):
                        m.next = "LOAD_KV"
                    with m.Else():
                        m.next = "P1_WAIT"

        # ---- back: pass 2, reciprocals, output ---------------------------------------------------
        with m.FSM(name="back"):
            with m.State("IDLE"):
                with m.If(mail_full):
                    m.d.comb += b_clear.eq(1)
                    m.d.sync += [mail_full.eq(0), b_par.eq(mail.par), b_rows.eq(mail.rows),
                                 b_n.eq(mail.n), b_glast.eq(mail.glast), b_vpar.eq(mail.vpar),
                                 b_addr.eq(0), b_sl.eq(0), b_row.eq(0)]
                    m.next = "PASS2"
            with m.State("PASS2"):
                m.d.comb += p2_issue.eq(1)
                b_step()
                with m.If(b_last_slice & (b_row == b_n - 1)):
                    m.next = "P2_DRAIN"
            with m.State("P2_DRAIN"):
                with m.If(p2_v == 0):
                    m.d.comb += u_release.eq(Mux(b_par, 0b10, 0b01))
                    m.next = "RECIP"
            with m.State("RECIP"):
                m.d.comb += recip_start.eq(1)
                m.next = "RECIP_WAIT"
            with m.State("RECIP_WAIT"):
                with m.If(all_recips):
                    for hh in range(H):
                        for r in range(R):
                            m.d.comb += recips[hh][r].o.ready.eq(1)
                    m.d.sync += [out_row.eq(0), b_sl.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                final_row = out_row == b_rows - 1
                with m.If(en):
                    m.d.comb += [out_issue.eq(1),
                                 issue_last.eq(final_row & b_last_slice & b_glast)]
                    m.d.sync += b_sl.eq(Mux(b_last_slice, 0, b_sl + 1))
                    with m.If(b_last_slice):
                        m.d.sync += out_row.eq(out_row + 1)
                        with m.If(final_row):
                            m.next = "IDLE"
        return m


def exp_cycles(config, n, groups=1):
    """Cycles from the first ``k`` beat to the last ``o`` beat for ``groups`` head groups of ``n`` tokens.

    Inputs at full rate, ``o`` always ready. Two engines share the work of each
    block of ``rows <= R`` query rows (``S = head_dim / dp`` beats per row):

    * the Q loader fills the two Q blocks ahead of pass 1 (``rows * S`` beats per
      block, into a block once pass 1 has read it for the last time);
    * the front loads K and V side by side (``n * S`` beats each, V into one of two
      buffers, so neither waits for the back), then per block waits for its Q block
      and its score buffer, runs pass 1 (``n * S`` + ``P1_STAGES + 1`` to drain) and hands the block
      over (one cycle, once the back took the last one);
    * the back takes a block the cycle after it is handed over, runs pass 2
      (``n * S`` + ``P2_STAGES + 1``), the reciprocals (19) and the output (``rows * S``); the
      last beat leaves ``OUT_STAGES`` cycles after it is issued.
    """
    s = config.slices
    front = 0                  # cycle at which the front enters its next state
    back_free = 0              # first cycle the back is in IDLE again
    mail_taken = 0             # the back takes the hand-over mailbox at this cycle (+1 = empty)
    u_free = [0, 0]            # first cycle pass 1 may start on each score buffer
    q_next = 0                 # first cycle the Q loader may take its next beat
    q_free = [0, 0]            # first cycle the Q loader may fill each Q block
    par, last = 0, -1
    for _ in range(groups):
        front += n * s                                    # LOAD_KV: K and V side by side
        for first in range(0, n, config.r):
            rows = min(config.r, n - first)
            q_next = max(q_next, q_free[par]) + rows * s  # the loader fills the block
            p1 = max(front, u_free[par], q_next) + 1      # f_clear in P1_WAIT, PASS1 next cycle
            q_free[par] = p1 + n * s                      # released by pass 1's last read
            handoff = max(p1 + n * s + P1_STAGES + 1, mail_taken + 1)  # P1_DRAIN, then HANDOFF
            front = handoff + 1
            take = max(handoff + 1, back_free)            # back IDLE sees mail_full
            mail_taken = take
            p2_end = take + 1 + n * s                     # PASS2 issues
            release = p2_end + P2_STAGES                  # P2_DRAIN: u_release
            u_free[par] = release + 1
            out_start = release + 1 + 1 + Reciprocal.LATENCY
            last = out_start + rows * s - 1
            back_free = last + 1
            par ^= 1
    return last + OUT_STAGES + 1
