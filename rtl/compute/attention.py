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
each; every beat carries ``Dp`` dims of each of the ``H`` heads). Two engines, each a
Component with its own cycle model, work on consecutive blocks of R query rows at
once; the kernel joins them by the V and score memories (two buffers each), the
front's row maxima, a hand-over stream of blocks and the back's release of a score
buffer::

    Q loader: q beats --> Q blocks (two, alternating), filled while pass 1 reads the other
              (QueryLoader, inside the front)
    front (FrontEngine, FrontTiming):
            k, v beats side by side --> K and V buffers (N rows x head_dim, on chip)
            per block: pass 1: key j = 0..N-1 broadcast to the R rows: R x Dp MACs per head,
                               s -> u (R requantizers) -> score buffer (two, alternating),
                               running max per row
                       hand the block to the back
    back (BackEngine, BackTiming):
            pass 2: key j again: c = min(round_shift(max - u, 6), 15) per row (log2),
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

__all__ = ["AttentionConfig", "beat_layout", "score_layout", "block_layout", "QueryLoader",
           "FrontEngine", "BackEngine", "AttentionKernel", "FrontTiming", "BackTiming",
           "exp_cycles"]

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


def score_layout(config):
    """One score word: the requantized score ``u`` (int16) of each of the ``r`` rows of a
    block for each of the ``h`` heads, for one key."""
    return data.ArrayLayout(data.ArrayLayout(signed(16), config.r), config.h)


def block_layout(config):
    """A block handed from the front to the back: its score buffer ``par``, its ``rows``
    (1..r), the group's tokens ``n``, ``glast`` (the group's final block) and the group's V
    buffer ``vpar``."""
    return data.StructLayout({"par": 1, "rows": range(config.r + 1),
                              "n": range(config.max_tokens + 1), "glast": 1, "vpar": 1})


def _memory_ports(config, port):
    """The ``port`` signatures (``memory.WritePort`` or ``memory.ReadPort``) of the two
    memories the engines share: V (two buffers of ``max_tokens * slices`` words) and the
    scores (two buffers of ``max_tokens`` words)."""
    return {"v": port.Signature(addr_width=ceil_log2(2 * config.max_tokens * config.slices),
                                shape=beat_layout(config.h, config.dp).members["data"]),
            "scores": port.Signature(addr_width=ceil_log2(2 * config.max_tokens),
                                     shape=score_layout(config))}


class FrontEngine(ConfigComponent):
    """The attention kernel's front: K and V in, then pass 1 of every block of query rows.

    Per head group it takes K and V side by side (K into its own memory, V into the
    shared V memory's buffer ``vpar``, alternating per group), then for each block of up
    to ``r`` query rows (from its :class:`QueryLoader`) waits for the block's Q and for
    its score buffer (two, alternating) to be released, and runs pass 1: key ``j = 0 ..
    n - 1``, one slice per cycle, broadcast to the block's rows: ``r x dp`` MACs per head,
    ``u = requantize(q . k_j, mult, shift, bits=16)`` written to word ``j`` of the score
    buffer, and each row's running max. Then it hands the block over on ``blocks``.

    Members
    -------
    mult, shift : In(15), In(6)
        The score requantizer; hold them while a group runs.
    k, v, q : In(stream.Signature(beat_layout(h, dp)))
        As :class:`AttentionKernel`'s.
    v_write : In(memory.WritePort.Signature(...))
        Driven: the shared V memory's write port.
    scores : In(memory.WritePort.Signature(...))
        Driven: the shared score memory's write port (:func:`score_layout` words; buffer
        ``p`` at words ``p * max_tokens ..``).
    maxima : Out(data.ArrayLayout(score_layout(config), 2))
        Per score buffer, each row's largest score: final when its block is handed over,
        held until the buffer is released.
    blocks : Out(stream.Signature(block_layout(config)))
        The hand-over, one block at a time: ``valid`` three cycles after pass 1's last
        score write (once the back has taken the previous block).
    release : In(2)
        Pulse: the back has read score buffer ``p`` for the last time.

    Cycle model: :class:`FrontTiming` (per group ``n * slices`` cycles of K and V, per
    block ``n * slices`` cycles of pass 1 and :data:`P1_STAGES` + 1 to drain). Every
    input may stall (the front waits); ``blocks`` may stall (the front holds the block
    and waits).
    """

    config_type = AttentionConfig

    def members(self, config):
        layout = beat_layout(config.h, config.dp)
        ports = _memory_ports(config, memory.WritePort)
        return {
            "mult": In(15), "shift": In(6),
            "k": In(stream.Signature(layout)), "v": In(stream.Signature(layout)),
            "q": In(stream.Signature(layout)),
            "v_write": In(ports["v"]), "scores": In(ports["scores"]),
            "maxima": Out(data.ArrayLayout(score_layout(config), 2)),
            "blocks": Out(stream.Signature(block_layout(config))),
            "release": In(2),
        }

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, DP, H, S, NMAX = cfg.r, cfg.dp, cfg.h, cfg.slices, cfg.max_tokens
        lane = beat_layout(H, DP).members["data"]
        m.submodules.kbuf = kbuf = memory.Memory(shape=lane, depth=NMAX * S, init=[])
        # Two Q blocks: the loader fills one while pass 1 reads the other.
        m.submodules.qbuf = qbuf = memory.Memory(shape=data.ArrayLayout(lane, R), depth=2 * S,
                                                 init=[])
        m.submodules.q_loader = q_loader = QueryLoader(cfg)
        wiring.connect(m, wiring.flipped(self.q), q_loader.q)
        wiring.connect(m, q_loader.blocks, qbuf.write_port(granularity=1))
        k_wr, k_rd, q_rd = kbuf.write_port(), kbuf.read_port(), qbuf.read_port()
        v_wr, u_wr, mail = self.v_write, self.scores, self.blocks

        n = Signal(range(NMAX + 1))              # tokens of the group
        addr = Signal(range(NMAX * S + 1))       # row * S + slice
        row = Signal(range(NMAX + 1))
        sl = Signal(range(S))
        block = Signal(range(NMAX + R + 1))      # first row of the block
        rows = Signal(range(R + 1))              # rows of the block
        q_full = q_loader.full                   # Q block loaded, not yet read by pass 1
        q_release = Signal()                     # pass 1 read its Q block for the last time
        f_par = Signal()                         # the block's Q / score buffer
        v_addr = Signal(range(NMAX * S + 1))     # V rows * S + slice, loaded beside K
        k_done, v_done = Signal(), Signal()      # K / V of the group fully loaded
        g_par = Signal()                         # the group's V buffer
        last_slice = sl == S - 1
        u_free = Signal(2, init=0b11)            # score buffers released by the back
        f_clear = Signal()

        def step():
            m.d.sync += [addr.eq(addr + 1), sl.eq(Mux(last_slice, 0, sl + 1)),
                         row.eq(Mux(last_slice, row + 1, row))]

        def rewind():
            m.d.sync += [addr.eq(0), sl.eq(0), row.eq(0)]

        # Pass 1 stages: [0] read data, [1] sum, [2] product, [3, 4] the score u.
        p1_issue = Signal()
        p1_v = Signal(P1_STAGES)
        p1_first, p1_last = Signal(), Signal(P1_STAGES)
        p1_key = [Signal(range(NMAX), name=f"p1_key_{x}") for x in range(P1_STAGES)]
        p1_u = P1_STAGES - 1                      # the stage that holds u
        m.d.sync += [p1_v.eq(Cat(p1_issue, p1_v[:-1])), p1_first.eq(sl == 0),
                     p1_last.eq(Cat(p1_issue & last_slice, p1_last[:-1])),
                     p1_key[0].eq(row), *(p1_key[x + 1].eq(p1_key[x]) for x in range(p1_u))]
        m.d.comb += [k_rd.addr.eq(addr), q_rd.addr.eq(Mux(f_par, S, 0) + sl),
                     u_wr.addr.eq(Mux(f_par, NMAX, 0) + p1_key[p1_u]),
                     u_wr.en.eq(p1_v[p1_u] & p1_last[p1_u])]

        for hh in range(H):
            for r in range(R):
                # Stage 1: the Dp-wide dot product, a key's sum ends with its last slice;
                # stage 2: times the requantizer; then round and saturate; keep the max.
                acc = Signal(signed(SCORE_BITS), name=f"acc_{hh}_{r}")
                prod = Signal(signed(SCORE_BITS + 16), name=f"sp_{hh}_{r}")
                dot = sum(k_rd.data[hh][d] * q_rd.data[r][hh][d] for d in range(DP))
                with m.If(p1_v[0]):
                    m.d.sync += acc.eq(Mux(p1_first, 0, acc) + dot)
                with m.If(p1_v[1] & p1_last[1]):
                    m.d.sync += prod.eq(acc * self.mult)
                u = round_shift_saturate(m, 1, prod, self.shift, signed(16), lo=-32768,
                                         hi=32767, name=f"u_{hh}_{r}")
                m.d.comb += u_wr.data[hh][r].eq(u)
                for p in range(2):
                    run_max = self.maxima[p][hh][r]
                    with m.If(f_clear & (f_par == p)):
                        m.d.sync += run_max.eq(-32768)
                    with m.Elif(p1_v[p1_u] & p1_last[p1_u] & (f_par == p) & (u > run_max)):
                        m.d.sync += run_max.eq(u)

        m.d.comb += [
            k_wr.addr.eq(addr), k_wr.data.eq(self.k.payload.data),
            v_wr.addr.eq(Mux(g_par, NMAX * S, 0) + v_addr), v_wr.data.eq(self.v.payload.data),
            q_loader.release.eq(Mux(q_release, Mux(f_par, 0b10, 0b01), 0)),
        ]
        m.d.sync += u_free.eq((u_free | self.release) & ~Mux(f_clear, Mux(f_par, 0b10, 0b01), 0))
        with m.If(mail.valid & mail.ready):
            m.d.sync += mail.valid.eq(0)
        with m.FSM(name="front"):
            with m.State("LOAD_KV"):
                # K and V arrive side by side. K is read only by pass 1. V goes to the buffer
                # of the group two before, whose last block the back took before this front
                # could hand over the previous group's last block: every pass 2 read of it is
                # done, or runs ahead of these writes (pass 2 never stalls).
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
                with m.If(~mail.valid):
                    glast = block + R >= n
                    m.d.sync += [mail.valid.eq(1), mail.payload.par.eq(f_par),
                                 mail.payload.rows.eq(rows), mail.payload.n.eq(n),
                                 mail.payload.glast.eq(glast), mail.payload.vpar.eq(g_par),
                                 g_par.eq(g_par ^ glast), f_par.eq(~f_par), block.eq(block + R),
                                 rows.eq(Mux(n - (block + R) < R, n - (block + R), R))]
                    with m.If(glast):
                        m.next = "LOAD_KV"
                    with m.Else():
                        m.next = "P1_WAIT"
        return m


class BackEngine(ConfigComponent):
    """The attention kernel's back: pass 2, the reciprocals and the output of each block.

    For a block taken from ``blocks`` (score buffer ``par``, V buffer ``vpar``): pass 2
    reads key ``j = 0 .. n - 1`` again, one slice per cycle: per row ``r`` the code of
    ``(r, j)`` from the row's max and score (log2: ``c = min(round_shift(max - u, 6),
    15)``), ``num[r] += v_j << (14 - c)`` on ``r x dp`` shift-add lanes per head (no DSP;
    mant4 adds ``v_j`` times its 5-bit mantissa as gated shifted adds; sqrt2 keeps a second
    numerator for odd codes) and ``den[r] += 2**(14 - c)``. Then it releases the score
    buffer, starts one bit-serial :class:`~rtl.compute.recip.Reciprocal` per row and head,
    and sends the rows in order: ``out = sat8(round_shift(num * rec, k + 15))``, ``dp``
    multipliers per head.

    Members
    -------
    v_read : In(memory.ReadPort.Signature(...))
        Driven: the shared V memory's read port.
    scores : In(memory.ReadPort.Signature(...))
        Driven: the shared score memory's read port.
    maxima : In(data.ArrayLayout(score_layout(config), 2))
        The front's row maxima per score buffer.
    blocks : In(stream.Signature(block_layout(config)))
        Blocks to finish; taken when the back is idle.
    release : Out(2)
        Pulse: score buffer ``p`` read for the last time (pass 2 drained).
    o : Out(stream.Signature(beat_layout(h, dp)))
        The block's rows, ``slices`` beats each; ``last`` on the group's final beat.

    Cycle model: :class:`BackTiming`. Pass 2 never stalls; ``o`` may (the output waits).
    """

    config_type = AttentionConfig

    def members(self, config):
        ports = _memory_ports(config, memory.ReadPort)
        return {
            "v_read": In(ports["v"]), "scores": In(ports["scores"]),
            "maxima": In(data.ArrayLayout(score_layout(config), 2)),
            "blocks": In(stream.Signature(block_layout(config))),
            "release": Out(2),
            "o": Out(stream.Signature(beat_layout(config.h, config.dp))),
        }

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, DP, H, S, NMAX = cfg.r, cfg.dp, cfg.h, cfg.slices, cfg.max_tokens
        NUM_BITS, DEN_BITS = cfg.num_bits, cfg.den_bits
        SQRT2, MANT = cfg.codes == "sqrt2", cfg.codes == "mant4"
        if MANT:
            table = Array(Const(int(x), range(int(MANT_TABLE.max()) + 1)) for x in MANT_TABLE)
        lane = beat_layout(H, DP).members["data"]
        v_rd, u_rd, mail = self.v_read, self.scores, self.blocks

        b_addr = Signal(range(NMAX * S + 1))     # row * S + slice
        b_row = Signal(range(NMAX + 1))
        b_sl = Signal(range(S))
        b_n = Signal(range(NMAX + 1))
        b_rows = Signal(range(R + 1))
        b_par = Signal()                          # the block's score buffer
        b_glast = Signal()                        # the block ends the group
        b_vpar = Signal()                         # the group's V buffer
        b_last_slice = b_sl == S - 1
        out_row = Signal(range(R))

        def b_step():
            m.d.sync += [b_addr.eq(b_addr + 1), b_sl.eq(Mux(b_last_slice, 0, b_sl + 1)),
                         b_row.eq(Mux(b_last_slice, b_row + 1, b_row))]

        # num[parity][head][row][slice]: parity 1 (odd sqrt2 codes) only with codes="sqrt2".
        num = [[[[Signal(data.ArrayLayout(signed(NUM_BITS), DP), name=f"num{p}_{hh}_{r}_{t}")
                  for t in range(S)] for r in range(R)] for hh in range(H)]
               for p in range(1 + SQRT2)]
        den = [[Signal(DEN_BITS, name=f"den_{hh}_{r}") for r in range(R)] for hh in range(H)]
        recips = [[Reciprocal(DEN_BITS) for r in range(R)] for hh in range(H)]
        for hh in range(H):
            for r in range(R):
                m.submodules[f"recip_{hh}_{r}"] = recips[hh][r]
        rec = [[Signal(RECIP_BITS + 2, name=f"rec_{hh}_{r}") for r in range(R)] for hh in range(H)]
        rk = [[Signal(range(DEN_BITS + 1), name=f"k_{hh}_{r}") for r in range(R)] for hh in range(H)]

        p2_issue, b_clear, out_issue, recip_start = (Signal(name=x) for x in (
            "p2_issue", "b_clear", "out_issue", "recip_start"))
        # Pass 2 stages: [0] read data, the code; [1] numerators and denominator.
        p2_v, p2_first = Signal(P2_STAGES), Signal(P2_STAGES)
        v_held = Signal(lane)                     # V's read data, with the codes
        m.d.sync += [p2_v.eq(Cat(p2_issue, p2_v[:-1])),
                     p2_first.eq(Cat(b_sl == 0, p2_first[:-1])), v_held.eq(v_rd.data)]
        m.d.comb += [v_rd.addr.eq(Mux(b_vpar, NMAX * S, 0) + b_addr),
                     u_rd.addr.eq(Mux(b_par, NMAX, 0) + b_row)]

        for hh in range(H):
            for r in range(R):
                # Pass 2: the code of (row r, key j), then v << lift into the rotating
                # numerator slices and the weight into the denominator, without DSPs.
                # log2: lift = 14 - c, weight 2**lift. sqrt2: lift = 7 - ceil(c / 2), odd codes
                # into the second numerator, weight (2**15 or SQRT2_Q15 if odd) << lift.
                # mant4: the code is the distance itself (capped at 15 octaves), the weight
                # MANT_TABLE[c % 64] << (14 - c // 64) and v is multiplied by the mantissa.
                # Stage 1: the code, from the score read; stage 2: the sums.
                d_log = Signal(unsigned(17), name=f"dlog_{hh}_{r}")
                zero_code = MANT_CODE_ZERO if MANT else CODE_ZERO
                code = Signal(range(zero_code + 1), name=f"code_{hh}_{r}")
                m.d.comb += d_log.eq(Mux(b_par, self.maxima[1][hh][r], self.maxima[0][hh][r])
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

        # Output: num * rec of the current row, rounded and saturated. OUT_STAGES stages that
        # advance together unless o stalls: the issued row's numerators and reciprocal, then
        # num * rec through round_shift_saturate.
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

        with m.FSM(name="back"):
            with m.State("IDLE"):
                m.d.comb += mail.ready.eq(1)
                with m.If(mail.valid):
                    m.d.comb += b_clear.eq(1)
                    m.d.sync += [b_par.eq(mail.payload.par), b_rows.eq(mail.payload.rows),
                                 b_n.eq(mail.payload.n), b_glast.eq(mail.payload.glast),
                                 b_vpar.eq(mail.payload.vpar),
                                 b_addr.eq(0), b_sl.eq(0), b_row.eq(0)]
                    m.next = "PASS2"
            with m.State("PASS2"):
                m.d.comb += p2_issue.eq(1)
                b_step()
                with m.If(b_last_slice & (b_row == b_n - 1)):
                    m.next = "P2_DRAIN"
            with m.State("P2_DRAIN"):
                with m.If(p2_v == 0):
                    m.d.comb += self.release.eq(Mux(b_par, 0b10, 0b01))
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


class AttentionKernel(ConfigComponent):
    """Attention of ``H`` heads at a time over ``N <= max_tokens`` tokens (see the module docstring).

    A :class:`FrontEngine` and a :class:`BackEngine` joined by the V and score memories
    (two buffers each), the front's row maxima and the hand-over of each block.

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
        # Two V buffers: a group's V loads while the back's pass 2 still reads the previous one.
        m.submodules.vbuf = vbuf = memory.Memory(shape=beat_layout(cfg.h, cfg.dp).members["data"],
                                                 depth=2 * cfg.max_tokens * cfg.slices, init=[])
        # Two score buffers: pass 1 of block b+1 runs beside pass 2 of block b.
        m.submodules.ubuf = ubuf = memory.Memory(shape=score_layout(cfg),
                                                 depth=2 * cfg.max_tokens, init=[])
        m.submodules.front = front = FrontEngine(cfg)
        m.submodules.back = back = BackEngine(cfg)
        for name in ("k", "v", "q"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(front, name))
        wiring.connect(m, front.v_write, vbuf.write_port())
        wiring.connect(m, front.scores, ubuf.write_port())
        wiring.connect(m, back.v_read, vbuf.read_port())
        wiring.connect(m, back.scores, ubuf.read_port())
        wiring.connect(m, front.blocks, back.blocks)
        wiring.connect(m, back.o, wiring.flipped(self.o))
        m.d.comb += [front.mult.eq(self.mult), front.shift.eq(self.shift),
                     back.maxima.eq(front.maxima), front.release.eq(back.release)]
        return m


class FrontTiming:
    """The cycle model of a :class:`FrontEngine`, block by block (cycle 0: its first K beat;
    inputs at full rate).

    Per group, K and V take ``n * slices`` cycles side by side. The Q loader fills a block's
    Q (``rows * slices`` beats) once pass 1 has read that half for the last time. Pass 1
    starts the cycle after the front has its block's Q, its score buffer back and its
    previous state done, reads ``n * slices`` slices, drains :data:`P1_STAGES` + 1 cycles,
    and hands over once the back has taken the previous block (``valid`` the next cycle).
    """

    def __init__(self, config):
        self.config = config
        self.front = 0            # cycle at which the front enters its next state
        self.taken = 0            # the cycle the back took the previous block
        self.u_free = [0, 0]      # first cycle pass 1 may start on each score buffer
        self.q_next = 0           # first cycle the Q loader may take its next beat
        self.q_free = [0, 0]      # first cycle the Q loader may fill each Q block
        self.par = 0

    def group(self, n):
        """A group of ``n`` tokens begins: its K and V."""
        self.front += n * self.config.slices

    def block(self, n, rows):
        """The cycle the front loads the hand-over of its next block of ``rows`` rows
        (``blocks.valid`` rises the cycle after)."""
        s, par = self.config.slices, self.par
        self.q_next = max(self.q_next, self.q_free[par]) + rows * s
        p1 = max(self.front, self.u_free[par], self.q_next) + 1
        self.q_free[par] = p1 + n * s
        handoff = max(p1 + n * s + P1_STAGES + 1, self.taken + 1)
        self.front = handoff + 1
        return handoff

    def handed_over(self, take, release):
        """The back took the block in cycle ``take`` and released its score buffer in
        cycle ``release``."""
        self.taken = take
        self.u_free[self.par] = release + 1
        self.par ^= 1


class BackTiming:
    """The cycle model of a :class:`BackEngine`, block by block: pass 2 (``n * slices``
    issues, :data:`P2_STAGES` to drain), the reciprocals (``Reciprocal.LATENCY`` plus two),
    then ``rows * slices`` output issues; the last beat leaves :data:`OUT_STAGES` cycles
    after its issue (``o`` always ready)."""

    def __init__(self, config):
        self.config = config
        self.free = 0             # first cycle the back is idle again

    def block(self, handoff, n, rows):
        """``(take, release, last)`` of a block whose hand-over state was in cycle
        ``handoff``: the cycle the back takes it, the cycle of its ``release`` pulse and the
        cycle its last output beat is issued."""
        s = self.config.slices
        take = max(handoff + 1, self.free)
        release = take + 1 + n * s + P2_STAGES
        last = release + 2 + Reciprocal.LATENCY + rows * s - 1
        self.free = last + 1
        return take, release, last


def exp_cycles(config, n, groups=1):
    """Cycles from the first ``k`` beat to the last ``o`` beat for ``groups`` head groups of
    ``n`` tokens: :class:`FrontTiming` and :class:`BackTiming` joined by the hand-overs
    (inputs at full rate, ``o`` always ready)."""
    front, back = FrontTiming(config), BackTiming(config)
    last = -1
    for _ in range(groups):
        front.group(n)
        for first in range(0, n, config.r):
            rows = min(config.r, n - first)
            take, release, last = back.block(front.block(n, rows), n, rows)
            front.handed_over(take, release)
    return last + OUT_STAGES + 1
