"""Reusable linear kernel: tiled int8 GEMM on the systolic array with double-buffered weights.

Every linear layer of the model (qkv, proj, fc1, fc2, the MoE gate and the
experts) runs on this kernel::

    w (bus beats) --> WeightLoader --> weight memory (2 banks) --+
                                       channel memory (2 banks) -+--> Sequencer --> SystolicArray
    x (token slices) --> token memory (2 groups of T rows) -------+      (T x PO, PI lanes,
                                                                          row broadcast)
                                                                               |
    y (PO outputs of one token) <-- OutputStage (bias, requantize) <-----------+

Folding (FINN vocabulary): a ``d_in x d_out`` matrix is ``KB = ceil(d_in / PI)``
input folds by ``NB = ceil(d_out / PO)`` output folds; tokens go through in
groups of ``T``. For every group, the kernel computes the ``NB`` output tiles
one after the other, each ``KB`` beats of ``T x PO x PI`` MACs.

Matrix image (the ``w`` stream): one header beat (:data:`HEADER`: the fold
counts ``KB`` and ``NB``, so the kernel needs no division), then the
``NB * KB`` weight words in tile order (output fold ``j`` major, input fold
``s`` minor; word ``(j, s)`` holds ``W[j*PO + c, s*PI + i]`` at element
``[c][i]``, zero beyond the matrix edge), then ``NB`` channel words
(:func:`channel_layout`: bias and requantization constants of output channels
``j*PO .. j*PO+PO-1``). Each word is split into ``ceil(bits / bus_width)``
beats, least significant bits first. :func:`matrix_image` builds it.

Batches (the ``x`` stream): each matrix image is followed, on ``x``, by the
token rows it applies to, ``KB`` beats per row (slice ``s`` = features
``s*PI .. s*PI+PI-1``), each beat tagged with its token index; ``last`` marks
the final beat of the batch. Images and batches pair up in order: the n-th
batch uses the n-th matrix. The next matrix loads while the current batch
computes.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .params import check_int, validating
from .systolic import ACC_WIDTH, SystolicArray, latency

__all__ = ["TOKEN_BITS", "DIM_BITS", "HEADER", "x_layout", "y_layout", "channel_layout",
           "LinearConfig", "LinearKernel", "exp_cycles"]

#: Width of token indices carried with every beat.
TOKEN_BITS = 16
#: Width of the matrix dimensions in the header.
DIM_BITS = 16

HEADER = data.StructLayout({"kb": DIM_BITS, "nb": DIM_BITS})


def x_layout(pi):
    """One input beat: ``pi`` features of token ``token``; ``last`` ends the batch."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), pi),
        "token": TOKEN_BITS,
        "last": 1,
    })


def channel_layout(po):
    """Per-output-channel constants of one output fold: int32 bias."""
    return data.StructLayout({"bias": data.ArrayLayout(signed(32), po)})


def y_layout(po):
    """One output beat: outputs ``fold*PO .. fold*PO+PO-1`` of token ``token``."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(ACC_WIDTH), po),
        "token": TOKEN_BITS,
        "fold": DIM_BITS,
        "last": 1,
    })


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class LinearConfig:
    """Parameters of a :class:`LinearKernel` and the formats they imply.

    Host code (matrix images, token beats, the cycle model) works from the
    config alone, without building the hardware.

    Parameters
    ----------
    pi : int, 1..64
        Input parallelism: features per beat (the PE dot-product width).
    po : int, 1..64
        Output parallelism: output channels per tile (array columns).
    t : int, 1..16
        Token lanes: tokens sharing each weight word (array rows).
    max_in, max_out : int, 1..65535
        Largest ``d_in`` and ``d_out`` of any matrix the kernel must hold.
    max_weight_words : int, optional
        Weight words per bank; default ``ceil(max_in/pi) * ceil(max_out/po)``.
        Give the model's largest ``KB * NB`` to save memory when the largest
        ``d_in`` and ``d_out`` never occur in one matrix.
    bus_width : int, 32..4096
        Bits per ``w`` beat (a memory bus: 256 by default; at least the header).
    dsp_packing : bool
        Two int8 MACs per multiplier on DSP48E2 (see :class:`rtl.systolic.SystolicArray`).
    """

    pi: int
    po: int
    t: int
    max_in: int
    max_out: int
    max_weight_words: int = None
    bus_width: int = 256
    dsp_packing: bool = False

    def __post_init__(self):
        check_int("pi", self.pi, 1, 64)
        check_int("po", self.po, 1, 64)
        check_int("t", self.t, 1, 16)
        check_int("max_in", self.max_in, 1, (1 << DIM_BITS) - 1)
        check_int("max_out", self.max_out, 1, (1 << DIM_BITS) - 1)
        check_int("bus_width", self.bus_width, HEADER.size, 4096)
        full = self.kb_max * self.nb_max
        if not isinstance(self.dsp_packing, bool):
            raise ValueError(f"dsp_packing must be a bool, not {self.dsp_packing!r}")
        if self.max_weight_words is None:
            object.__setattr__(self, "max_weight_words", full)
        check_int("max_weight_words", self.max_weight_words, 1, full)

    @property
    def kb_max(self):
        return _ceil_div(self.max_in, self.pi)

    @property
    def nb_max(self):
        return _ceil_div(self.max_out, self.po)

    @property
    def weight_layout(self):
        """One weight word: ``[c][i]`` = weight of output channel ``c``, input ``i`` of the fold."""
        return data.ArrayLayout(data.ArrayLayout(signed(8), self.pi), self.po)

    @property
    def array_latency(self):
        """Latency of the systolic array this kernel is built on."""
        return latency(self.po, row_broadcast=True)

    def beats_per(self, layout):
        """Bus beats that carry one word of ``layout``."""
        return _ceil_div(data.Layout.cast(layout).size, self.bus_width)

    def check_matrix(self, name, d_in, d_out):
        """Fold counts ``(KB, NB)``; ``ValueError`` naming ``name`` if the matrix does not fit."""
        kb, nb = _ceil_div(d_in, self.pi), _ceil_div(d_out, self.po)
        if not (1 <= d_in <= self.max_in and 1 <= d_out <= self.max_out
                and kb * nb <= self.max_weight_words):
            raise ValueError(
                f"matrix {name} ({d_in} -> {d_out}) does not fit the kernel: d_in must be in "
                f"[1, {self.max_in}], d_out in [1, {self.max_out}] and "
                f"ceil(d_in/{self.pi}) * ceil(d_out/{self.po}) = {kb * nb} weight words "
                f"at most {self.max_weight_words}")
        return kb, nb


class LinearKernel(wiring.Component):
    """Tiled int8 GEMM with double-buffered on-chip weights (see the module docstring).

    Parameters
    ----------
    config : LinearConfig

    Members
    -------
    w : In(stream.Signature(unsigned(bus_width)))
        Matrix images.
    x : In(stream.Signature(x_layout(pi)))
        Token rows, ``KB`` beats each; ``last`` on the final beat of a batch.
    y : Out(stream.Signature(y_layout(po)))
        One beat per (token, output fold), folds of a token group in order,
        tokens of the group in arrival order within a fold.

    Throughput: ``t * po * pi`` MACs per cycle while a batch computes, provided
    ``KB >= t`` (else one tile per ``t`` cycles) and the next token group
    (``t * KB`` beats) arrives while the current one computes (``NB * KB``
    cycles). Cycle model: :func:`exp_cycles`.

    Backpressure: all three streams may stall at any time; nothing is lost.
    """

    def __init__(self, config):
        with validating(self):
            if not isinstance(config, LinearConfig):
                raise TypeError(f"config must be a LinearConfig, not {config!r}")
        self._config = config
        super().__init__({
            "w": In(stream.Signature(unsigned(config.bus_width))),
            "x": In(stream.Signature(x_layout(config.pi))),
            "y": Out(stream.Signature(y_layout(config.po))),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        pi, po, t = cfg.pi, cfg.po, cfg.t
        m.submodules.array = array = SystolicArray(t, po, k_lanes=pi, row_broadcast=True,
                                                   dsp_packing=cfg.dsp_packing)

        # ---- memories ----------------------------------------------------------------
        depth_w, depth_c, depth_x = cfg.max_weight_words, cfg.nb_max, cfg.kb_max
        m.submodules.weights = weights = memory.Memory(
            shape=cfg.weight_layout, depth=2 * depth_w, init=[])
        m.submodules.channels = channels = memory.Memory(
            shape=channel_layout(po), depth=2 * depth_c, init=[])
        token_word = data.ArrayLayout(data.ArrayLayout(signed(8), pi), t)
        m.submodules.tokens = tokens = memory.Memory(shape=token_word, depth=2 * depth_x, init=[])
        w_wr = weights.write_port()
        c_wr = channels.write_port()
        x_wr = tokens.write_port(granularity=1)
        w_rd = weights.read_port()
        c_rd = channels.read_port()
        x_rd = tokens.read_port()

        # Per weight bank: fold counts and whether a loaded matrix waits in it.
        kb = [Signal(DIM_BITS, name=f"kb_{b}") for b in range(2)]
        nb = [Signal(DIM_BITS, name=f"nb_{b}") for b in range(2)]
        bank_full = Signal(2)
        bank_release = Signal(2)      # set by the sequencer for one cycle

        # ---- weight loader: w beats -> header, weight words, channel words ---------
        bus = cfg.bus_width
        load_bank = Signal()
        bpw = cfg.beats_per(cfg.weight_layout)
        bpc = cfg.beats_per(channel_layout(po))
        gear = Signal(max(bpw, bpc) * bus)
        beat = Signal(range(max(bpw, bpc)))
        word = Signal(range(max(depth_w, depth_c) + 1))
        load_slice = Signal(DIM_BITS)
        load_fold = Signal(DIM_BITS)
        header = HEADER(self.w.payload[:HEADER.size])
        shifted_w = Cat(gear[bus:bpw * bus], self.w.payload)      # after this beat
        shifted_c = Cat(gear[bus:bpc * bus], self.w.payload)
        m.d.comb += [
            w_wr.addr.eq(Mux(load_bank, depth_w, 0) + word),
            w_wr.data.eq(shifted_w[:w_wr.data.shape().size]),
            c_wr.addr.eq(Mux(load_bank, depth_c, 0) + word),
            c_wr.data.eq(shifted_c[:c_wr.data.shape().size]),
        ]
        load_done = Signal()
        with m.FSM(name="loader"):
            with m.State("HEADER"):
                m.d.comb += self.w.ready.eq(~bank_full.bit_select(load_bank, 1))
                with m.If(self.w.valid & self.w.ready):
                    with m.Switch(load_bank):
                        for b in range(2):
                            with m.Case(b):
                                m.d.sync += [kb[b].eq(header.kb), nb[b].eq(header.nb)]
                    m.d.sync += [word.eq(0), beat.eq(0), load_slice.eq(0), load_fold.eq(0)]
                    m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                kb_l = Mux(load_bank, kb[1], kb[0])
                nb_l = Mux(load_bank, nb[1], nb[0])
                m.d.comb += self.w.ready.eq(1)
                with m.If(self.w.valid):
                    m.d.sync += gear[:bpw * bus].eq(shifted_w)
                    with m.If(beat == bpw - 1):
                        m.d.comb += w_wr.en.eq(1)
                        m.d.sync += [beat.eq(0), word.eq(word + 1), load_slice.eq(load_slice + 1)]
                        # Count slices and folds rather than compare with KB * NB: no multiplier.
                        with m.If(load_slice + 1 == kb_l):
                            m.d.sync += [load_slice.eq(0), load_fold.eq(load_fold + 1)]
                            with m.If(load_fold + 1 == nb_l):
                                m.d.sync += word.eq(0)
                                m.next = "CHANNELS"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("CHANNELS"):
                nb_l = Mux(load_bank, nb[1], nb[0])
                m.d.comb += self.w.ready.eq(1)
                with m.If(self.w.valid):
                    m.d.sync += gear[:bpc * bus].eq(shifted_c)
                    with m.If(beat == bpc - 1):
                        m.d.comb += c_wr.en.eq(1)
                        m.d.sync += [beat.eq(0), word.eq(word + 1)]
                        with m.If(word + 1 == nb_l):
                            m.d.comb += load_done.eq(1)
                            m.d.sync += load_bank.eq(~load_bank)
                            m.next = "HEADER"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
        m.d.sync += bank_full.eq((bank_full | Mux(load_done, 1 << load_bank, 0)) & ~bank_release)

        # ---- token writer: x beats -> token memory (2 groups of t rows) -------------
        x_bank = Signal()           # bank of the matrix the current batch uses
        x_group = Signal()          # group slot being written
        x_row = Signal(range(t))
        x_slice = Signal(DIM_BITS)
        group_ready = Signal(2)
        group_release = Signal(2)
        group_tokens = [Signal(data.ArrayLayout(TOKEN_BITS, t), name=f"group_tokens_{g}")
                        for g in range(2)]
        group_rows = [Signal(range(t + 1), name=f"group_rows_{g}") for g in range(2)]
        group_last = Signal(2)
        group_bank = Signal(2)
        group_done = Signal()
        kb_x = Mux(x_bank, kb[1], kb[0])
        m.d.comb += [
            self.x.ready.eq(bank_full.bit_select(x_bank, 1) &
                            ~group_ready.bit_select(x_group, 1)),
            x_wr.addr.eq(Mux(x_group, depth_x, 0) + x_slice),
            x_wr.data.eq(Cat(*([self.x.payload.data] * t))),
        ]
        with m.If(self.x.valid & self.x.ready):
            m.d.comb += x_wr.en.eq(1 << x_row)
            with m.If(x_slice + 1 == kb_x):
                m.d.sync += x_slice.eq(0)
                with m.Switch(x_group):
                    for g in range(2):
                        with m.Case(g):
                            m.d.sync += group_tokens[g][x_row].eq(self.x.payload.token)
                            with m.If((x_row == t - 1) | self.x.payload.last):
                                m.d.sync += [
                                    group_rows[g].eq(x_row + 1),
                                    group_last[g].eq(self.x.payload.last),
                                    group_bank[g].eq(x_bank),
                                ]
                with m.If((x_row == t - 1) | self.x.payload.last):
                    m.d.comb += group_done.eq(1)
                    m.d.sync += [x_row.eq(0), x_group.eq(~x_group)]
                    with m.If(self.x.payload.last):
                        m.d.sync += x_bank.eq(~x_bank)
                with m.Else():
                    m.d.sync += x_row.eq(x_row + 1)
            with m.Else():
                m.d.sync += x_slice.eq(x_slice + 1)
        m.d.sync += group_ready.eq(
            (group_ready | Mux(group_done, 1 << x_group, 0)) & ~group_release)

        # ---- sequencer: S0 issues memory reads, S1 holds the beat for the array -----
        s_group = Signal()
        s_slice = Signal(DIM_BITS)
        s_fold = Signal(DIM_BITS)
        s_word = Signal(range(depth_w + 1))
        s_bank = group_bank.bit_select(s_group, 1)
        kb_s = Mux(s_bank, kb[1], kb[0])
        nb_s = Mux(s_bank, nb[1], nb[0])
        tile_info = data.StructLayout({
            "tokens": data.ArrayLayout(TOKEN_BITS, t),
            "rows": range(t + 1),
            "fold": DIM_BITS,
            "last": 1,                     # final tile of the batch
        })
        s1_valid = Signal()
        s1_last = Signal()                 # final beat of a tile
        s1_info = Signal(tile_info)

        side = fifo.SyncFIFOBuffered(
            width=tile_info.size + channel_layout(po).size,
            depth=array.fifo_rows // t + 1)
        m.submodules.side = side
        last_gate = ~s1_last | side.w_rdy
        m.d.comb += [
            array.i.valid.eq(s1_valid & last_gate),
            array.i.payload.a.eq(x_rd.data),
            array.i.payload.b.eq(w_rd.data),
            array.i.payload.last.eq(s1_last),
            side.w_data.eq(Cat(s1_info, c_rd.data)),
            side.w_en.eq(s1_valid & s1_last & array.i.ready & last_gate),
        ]
        advance = ~s1_valid | (array.i.ready & last_gate)
        issue = advance & group_ready.bit_select(s_group, 1)
        tile_end = s_slice + 1 == kb_s
        group_end = tile_end & (s_fold + 1 == nb_s)
        m.d.comb += [
            x_rd.en.eq(advance), w_rd.en.eq(advance), c_rd.en.eq(advance),
            x_rd.addr.eq(Mux(s_group, depth_x, 0) + s_slice),
            w_rd.addr.eq(Mux(s_bank, depth_w, 0) + s_word),
            c_rd.addr.eq(Mux(s_bank, depth_c, 0) + s_fold),
        ]
        with m.If(advance):
            m.d.sync += s1_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                s1_last.eq(tile_end),
                s1_info.tokens.eq(Mux(s_group, group_tokens[1], group_tokens[0])),
                s1_info.rows.eq(Mux(s_group, group_rows[1], group_rows[0])),
                s1_info.fold.eq(s_fold),
                s1_info.last.eq(group_end & group_last.bit_select(s_group, 1)),
            ]
            with m.If(tile_end):
                m.d.sync += [s_slice.eq(0), s_fold.eq(s_fold + 1)]
            with m.Else():
                m.d.sync += s_slice.eq(s_slice + 1)
            m.d.sync += s_word.eq(s_word + 1)
            with m.If(group_end):
                # Reading of this group (and, at a batch end, of its weight bank) is
                # complete: the read ports hold the issued data, so the writers may go on.
                m.d.comb += group_release.eq(1 << s_group)
                m.d.sync += [s_group.eq(~s_group), s_fold.eq(0), s_word.eq(0)]
                with m.If(group_last.bit_select(s_group, 1)):
                    m.d.comb += bank_release.eq(1 << s_bank)

        # ---- output stage: drop padding rows, add bias --------------------------------
        head_info = Signal(tile_info)
        head_chan = Signal(channel_layout(po))
        m.d.comb += Cat(head_info, head_chan).eq(side.r_data)
        row = Signal(range(t))
        keep = row < head_info.rows
        o_valid = Signal()
        o_data = Signal(y_layout(po))
        take = array.o.valid & side.r_rdy & (~o_valid | self.y.ready | ~keep)
        m.d.comb += [
            array.o.ready.eq(take),
            side.r_en.eq(take & array.o.payload.last),
            self.y.valid.eq(o_valid),
            self.y.payload.eq(o_data),
        ]
        with m.If(self.y.ready):
            m.d.sync += o_valid.eq(0)
        with m.If(take):
            m.d.sync += row.eq(Mux(array.o.payload.last, 0, row + 1))
            with m.If(keep):
                m.d.sync += [
                    o_valid.eq(1),
                    o_data.token.eq(head_info.tokens[row]),
                    o_data.fold.eq(head_info.fold),
                    o_data.last.eq(head_info.last & (row + 1 == head_info.rows)),
                ]
                for c in range(po):
                    m.d.sync += o_data.data[c].eq(array.o.payload.acc[c] + head_chan.bias[c])
        return m


def exp_cycles(config, jobs):
    """Expected cycles for a sequence of ``(d_in, d_out, tokens)`` jobs (FINN's ``exp_cycles``).

    Each job is a matrix image on ``w`` followed by a batch of ``tokens`` rows on
    ``x``; sources run at full rate from cycle 0 and ``y`` is always ready. The
    count runs from cycle 0 to the last ``y`` transfer, inclusive.

    The recurrences follow the hardware. Weight bank ``n % 2`` is refilled once
    the batch that used it has issued its last beat; token slot ``g % 2`` once
    group ``g - 2`` has issued. The array accepts the last beat of a tile
    ``kb`` beats after the tile starts, and no sooner than ``t`` cycles after the
    previous tile's last beat (the array's tile spacing); a group starts once
    its rows are loaded. A group's final beat is issued when the beat before it
    is accepted, which is when its token slot and, at a batch end, its weight
    bank are released.
    """
    t = config.t
    bpw = config.beats_per(config.weight_layout)
    bpc = config.beats_per(channel_layout(config.po))
    w_end = x_end = -1                          # last w / x beat so far
    accepted = -(1 << 30)                       # last tile's last beat entered the array
    bank_release, slot_release = [-1, -1], [-1, -1]
    slot, last_y = 0, -1
    for n, (d_in, d_out, tokens) in enumerate(jobs):
        kb, nb = _ceil_div(d_in, config.pi), _ceil_div(d_out, config.po)
        w_end = max(w_end + 1, bank_release[n % 2] + 1) + 1 + nb * kb * bpw + nb * bpc - 1
        release = -1
        for g in range(_ceil_div(tokens, t)):
            rows = min(t, tokens - g * t)
            x_end = max(x_end + 1, w_end + 1, slot_release[slot] + 1) + rows * kb - 1
            for j in range(nb):
                first = x_end + 1 if j == 0 else accepted
                previous = accepted
                accepted = max(max(first, accepted) + kb, previous + t)
            release = accepted - 1 if kb > 1 else max(previous, x_end + 1)
            slot_release[slot] = release
            slot ^= 1
            last_y = accepted + config.array_latency + rows
        bank_release[n % 2] = release
    return last_y + 1
