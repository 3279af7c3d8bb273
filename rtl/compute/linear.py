"""Reusable linear kernel: tiled int8 GEMM on the systolic array with double-buffered weights.

Every linear layer of the model (qkv, proj, fc1, fc2, the MoE gate and the
experts) runs on this kernel::

    w (bus beats) --> WeightLoader --> weight memory (2 banks) --+
                                       channel memory (2 banks) -+--> Sequencer --> SystolicArray
    x (token slices) --> token memory (2 groups of T rows) -------+      (T x PO, PI lanes,
                                                                          row broadcast)
                                                                               |
    y (PO outputs of one token) <-- OutputPipeline <---------------------------+
                                    (bias, requantize, saturate, GELU table)

:class:`WeightLoader` and :class:`OutputPipeline` are Components of their own, with
their own tests; the token writer and the sequencer share the kernel's bank and slot
flags and stay in :meth:`LinearKernel.elaborate`.

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
``j*PO .. j*PO+PO-1``), then, if the header's ``gelu`` flag is set, the GELU
table (:data:`GELU_ENTRIES` int8 entries, ``entries_per_beat`` per beat, entry
``q + 128`` for input code ``q``). Each word is split into
``ceil(bits / bus_width)`` beats, least significant bits first.
:func:`moevit.images.matrix_image` builds it.

Output arithmetic, per output channel ``c`` (exactly ``golden.quant``)::

    y = acc + bias[c]                                       int32 (no overflow: K bound)
    r = requantize(y, mult[c], shift[c], zero_point, bits)  round half up, saturate
    out = gelu_table[r + 128] if gelu else r                (gelu needs bits = 8)

``zero_point``, ``bits`` (:class:`OutMode`) and ``gelu`` are per matrix (header);
``mult`` (15-bit unsigned) and ``shift`` (6 bit) per channel.

Batches (the ``x`` stream): each matrix image is followed, on ``x``, by the
token rows it applies to, ``KB`` beats per row (slice ``s`` = features
``s*PI .. s*PI+PI-1``), each beat tagged with its token index and an 8-bit
gate score (MoE: the token's Q0.8 probability for this expert; passed through
to ``y`` for the score-weighted combine); ``last`` marks the final beat of the
batch. Images and batches pair up in order: the n-th
batch uses the n-th matrix. The next matrix loads while the current batch
computes.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..params import ConfigComponent, check_int
from .rounding import ROUND_STAGES, round_shift_saturate
from .systolic import ACC_WIDTH, SystolicArray, latency, result_layout

__all__ = ["TOKEN_BITS", "DIM_BITS", "SCORE_BITS", "GELU_ENTRIES", "OUTPUT_STAGES", "OutMode",
           "HEADER", "x_layout", "y_layout", "channel_layout", "tile_layout", "LinearConfig",
           "WeightLoader", "OutputPipeline", "LinearKernel", "image_beats", "exp_cycles", "batch_cycles"]

#: Width of token indices carried with every beat.
TOKEN_BITS = 16
#: Width of the matrix dimensions in the header.
DIM_BITS = 16

#: Width of the gate score carried with every token (Q0.8, ``golden.softmax.softmax_u8``).
SCORE_BITS = 8
#: Entries of a GELU table: one per int8 input code.
GELU_ENTRIES = 256
#: Register stages between the array output and ``y``: bias, multiply, the two of
#: :func:`~rtl.compute.rounding.round_shift_saturate`, table.
OUTPUT_STAGES = 2 + ROUND_STAGES + 1
#: Requantization multiplier and shift widths (``golden.quant.MULT_BITS``, ``SHIFT_MAX`` = 47).
MULT_BITS = 15
SHIFT_BITS = 6


class OutMode(enum.Enum, shape=2):
    """Output width of a matrix: requantize and saturate to int8, int16 or int32."""
    INT8 = 0
    INT16 = 1
    INT32 = 2

    @property
    def bits(self):
        return 8 << self.value


HEADER = data.StructLayout({
    "kb": DIM_BITS, "nb": DIM_BITS, "zero_point": signed(16), "mode": OutMode, "gelu": 1,
})


def x_layout(pi):
    """One input beat: ``pi`` features of token ``token`` with its gate ``score``; ``last`` ends the batch."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(8), pi),
        "token": TOKEN_BITS,
        "score": SCORE_BITS,
        "last": 1,
    })


def channel_layout(po):
    """Per-output-channel constants of one output fold: int32 bias, requantizer mult and shift."""
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), po),
        "mult": data.ArrayLayout(unsigned(MULT_BITS), po),
        "shift": data.ArrayLayout(unsigned(SHIFT_BITS), po),
    })


def y_layout(po, width=ACC_WIDTH):
    """One output beat: outputs ``fold*PO .. fold*PO+PO-1`` of token ``token`` (``width``-bit lanes)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(width), po),
        "token": TOKEN_BITS,
        "fold": DIM_BITS,
        "score": SCORE_BITS,
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
    bus_width : int, 64..4096
        Bits per ``w`` beat (a memory bus: 256 by default; at least the header).
    dsp_packing : bool
        Two int8 MACs per multiplier on DSP48E2 (see :class:`rtl.compute.systolic.SystolicArray`).
    out_width : int, 8, 16 or 32
        Width of the ``y`` lanes: the widest :class:`OutMode` a matrix may ask for.
        16 (default) serves every M3ViT layer (int8 activations, int16 residual
        branches and log2-domain gate logits); 32 also passes raw ``acc + bias``.
    gelu : bool
        Build the GELU table stage (two banks of :data:`GELU_ENTRIES` int8 per lane).
    """

    pi: int
    po: int
    t: int
    max_in: int
    max_out: int
    max_weight_words: int = None
    bus_width: int = 256
    dsp_packing: bool = False
    out_width: int = 16
    gelu: bool = True

    def __post_init__(self):
        check_int("pi", self.pi, 1, 64)
        check_int("po", self.po, 1, 64)
        check_int("t", self.t, 1, 16)
        check_int("max_in", self.max_in, 1, (1 << DIM_BITS) - 1)
        check_int("max_out", self.max_out, 1, (1 << DIM_BITS) - 1)
        check_int("bus_width", self.bus_width, 64, 4096)
        full = self.kb_max * self.nb_max
        for flag in ("dsp_packing", "gelu"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, not {getattr(self, flag)!r}")
        if self.out_width not in (8, 16, 32):
            raise ValueError(f"out_width must be 8, 16 or 32, not {self.out_width!r}")
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
    def entries_per_beat(self):
        """GELU table entries per ``w`` beat: the largest power of two that fits the bus, at most 256."""
        n = 1
        while n * 2 * 8 <= self.bus_width and n * 2 <= GELU_ENTRIES:
            n *= 2
        return n

    @property
    def table_beats(self):
        """``w`` beats of one GELU table."""
        return GELU_ENTRIES // self.entries_per_beat

    @property
    def table_layout(self):
        """One GELU table beat (its low bits): ``entries_per_beat`` int8 entries."""
        return data.ArrayLayout(signed(8), self.entries_per_beat)

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


class WeightLoader(ConfigComponent):
    """Matrix images from the bus into the kernel's two weight banks (the kernel's first
    block; see the module docstring for the image format).

    Bank ``b`` occupies words ``b * depth .. b * depth + depth - 1`` of each memory
    (``depth``: ``max_weight_words`` weight words, ``nb_max`` channel words,
    ``table_beats`` table beats). Images fill bank 0, then 1, then 0 again.

    Members
    -------
    w : In(stream.Signature(unsigned(bus_width)))
        Matrix images.
    weights, channels : In(memory.WritePort.Signature(...))
        Driven: the write ports of the weight memory (:attr:`LinearConfig.weight_layout`
        words, written once per ``beats_per(weight_layout)`` beats) and of the channel
        memory (:func:`channel_layout` words).
    table : In(memory.WritePort.Signature(...))
        Driven, with ``config.gelu`` only: the GELU table memory, one beat per word.
    headers : Out(data.ArrayLayout(HEADER, 2))
        The header of the image in each bank.
    full : Out(2)
        Bank ``b`` holds an image nobody has released: set the cycle after the image's
        last beat (its table's, if any) is written.
    release : In(2)
        Pulse: the kernel has issued the last read of bank ``b`` (clears ``full[b]``).
    table_busy : Out(2)
        Bank ``b``'s GELU table is in use: set with ``full[b]`` when the image has one.
    table_release : In(2)
        Pulse: the last output that reads bank ``b``'s table has left the kernel.

    Throughput: one ``w`` beat per cycle, :func:`image_beats` cycles per image, while the
    bank it fills is free; a header waits while ``full[bank]``, a table while
    ``table_busy[bank]``. Backpressure: ``w.ready`` low while it waits; nothing else
    stalls it.
    """

    config_type = LinearConfig

    def members(self, config):
        ports = {
            "w": In(stream.Signature(unsigned(config.bus_width))),
            "weights": In(memory.WritePort.Signature(
                addr_width=ceil_log2(2 * config.max_weight_words), shape=config.weight_layout)),
            "channels": In(memory.WritePort.Signature(
                addr_width=ceil_log2(2 * config.nb_max), shape=channel_layout(config.po))),
            "headers": Out(data.ArrayLayout(HEADER, 2)),
            "full": Out(2),
            "release": In(2),
            "table_busy": Out(2),
            "table_release": In(2),
        }
        if config.gelu:
            ports["table"] = In(memory.WritePort.Signature(
                addr_width=ceil_log2(2 * config.table_beats), shape=config.table_layout))
        return ports

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        depth_w, depth_c = cfg.max_weight_words, cfg.nb_max
        w_wr, c_wr, head = self.weights, self.channels, self.headers
        bus = cfg.bus_width
        load_bank = Signal()
        bpw = cfg.beats_per(cfg.weight_layout)
        bpc = cfg.beats_per(channel_layout(cfg.po))
        gear = Signal(max(bpw, bpc) * bus)
        beat = Signal(range(max(bpw, bpc)))
        word = Signal(range(max(depth_w, depth_c, cfg.table_beats) + 1))
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
        head_l = Signal(HEADER)
        m.d.comb += head_l.eq(Mux(load_bank, head[1], head[0]))
        if cfg.gelu:
            # Entries grouped by beat; each lane reads a group and picks its entry.
            t_wr = self.table
            m.d.comb += [t_wr.addr.eq(Mux(load_bank, cfg.table_beats, 0) + word),
                         t_wr.data.eq(self.w.payload[:cfg.table_layout.size])]
        with m.FSM(name="loader"):
            with m.State("HEADER"):
                m.d.comb += self.w.ready.eq(~self.full.bit_select(load_bank, 1))
                with m.If(self.w.valid & self.w.ready):
                    with m.Switch(load_bank):
                        for b in range(2):
                            with m.Case(b):
                                m.d.sync += head[b].eq(header)
                    m.d.sync += [word.eq(0), beat.eq(0), load_slice.eq(0), load_fold.eq(0)]
                    m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                m.d.comb += self.w.ready.eq(1)
                with m.If(self.w.valid):
                    m.d.sync += gear[:bpw * bus].eq(shifted_w)
                    with m.If(beat == bpw - 1):
                        m.d.comb += w_wr.en.eq(1)
                        m.d.sync += [beat.eq(0), word.eq(word + 1), load_slice.eq(load_slice + 1)]
                        # Count slices and folds rather than compare with KB * NB: no multiplier.
                        with m.If(load_slice + 1 == head_l.kb):
                            m.d.sync += [load_slice.eq(0), load_fold.eq(load_fold + 1)]
                            with m.If(load_fold + 1 == head_l.nb):
                                m.d.sync += word.eq(0)
                                m.next = "CHANNELS"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("CHANNELS"):
                m.d.comb += self.w.ready.eq(1)
                with m.If(self.w.valid):
                    m.d.sync += gear[:bpc * bus].eq(shifted_c)
                    with m.If(beat == bpc - 1):
                        m.d.comb += c_wr.en.eq(1)
                        m.d.sync += [beat.eq(0), word.eq(word + 1)]
                        with m.If(word + 1 == head_l.nb):
                            m.d.sync += word.eq(0)
                            # Without a table stage the header's gelu flag is ignored (the host
                            # refuses tables for such a kernel: moevit.images.matrix_image).
                            with m.If(head_l.gelu & cfg.gelu):
                                if cfg.gelu:
                                    m.next = "TABLE"
                            with m.Else():
                                m.d.comb += load_done.eq(1)
                                m.d.sync += load_bank.eq(~load_bank)
                                m.next = "HEADER"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            if cfg.gelu:
                with m.State("TABLE"):
                    # Wait until the previous batch of this bank has left the output pipeline.
                    m.d.comb += [self.w.ready.eq(~self.table_busy.bit_select(load_bank, 1)),
                                 t_wr.en.eq(self.w.valid & self.w.ready)]
                    with m.If(self.w.valid & self.w.ready):
                        m.d.sync += word.eq(word + 1)
                        with m.If(word + 1 == cfg.table_beats):
                            m.d.comb += load_done.eq(1)
                            m.d.sync += load_bank.eq(~load_bank)
                            m.next = "HEADER"
        m.d.sync += self.full.eq((self.full | Mux(load_done, 1 << load_bank, 0)) & ~self.release)
        m.d.sync += self.table_busy.eq(
            (self.table_busy | Mux(load_done & head_l.gelu, 1 << load_bank, 0))
            & ~self.table_release)
        return m


def tile_layout(config):
    """What the sequencer hands the output pipeline per tile (through a FIFO, as the tile's
    last beat enters the array): the ``info`` of its rows and the ``channels`` word of its
    output fold."""
    t = config.t
    return data.StructLayout({
        "info": data.StructLayout({
            "tokens": data.ArrayLayout(TOKEN_BITS, t),
            "scores": data.ArrayLayout(SCORE_BITS, t),
            "rows": range(t + 1),          # rows that are tokens (the rest is padding)
            "fold": DIM_BITS,
            "last": 1,                     # final tile of the batch
            "bank": 1,                     # the matrix's bank (its GELU table)
            "zero_point": signed(16),
            "mode": OutMode,
            "gelu": 1,
        }),
        "channels": channel_layout(config.po),
    })


class OutputPipeline(ConfigComponent):
    """The array's rows to ``y``: padding rows dropped, bias added, requantized, saturated
    to the matrix's mode and, for a GELU matrix, looked up in its bank's table (the
    kernel's last block; the arithmetic of the module docstring, ``golden.quant``).

    Members
    -------
    acc : In(stream.Signature(result_layout(po)))
        Accumulator rows of finished tiles (the systolic array's ``o``), ``t`` per tile,
        ``last`` on a tile's final row.
    tile : In(stream.Signature(tile_layout(config)))
        One entry per tile; taken with the tile's last row.
    table : In(memory.ReadPort.Signature(...)).array(po)
        With ``config.gelu`` only: driven, one read port of the GELU table memory per lane
        (:attr:`LinearConfig.table_layout` words, bank ``b`` at ``b * table_beats``).
    y : Out(stream.Signature(y_layout(po, out_width)))
        One beat per token row.
    table_release : Out(2)
        Pulse with the last ``y`` beat of a batch: its bank's table is free.

    Latency: :data:`OUTPUT_STAGES` cycles from a row's ``acc`` transfer to its ``y`` beat.
    Throughput: one row per cycle; a padding row (``row >= rows``) is taken and dropped
    in its cycle. Backpressure: the five stages advance together and hold while ``y`` is
    stalled with a beat; ``acc`` and ``tile`` then wait.
    """

    config_type = LinearConfig

    def members(self, config):
        ports = {
            "acc": In(stream.Signature(result_layout(config.po))),
            "tile": In(stream.Signature(tile_layout(config))),
            "y": Out(stream.Signature(y_layout(config.po, config.out_width))),
            "table_release": Out(2),
        }
        if config.gelu:
            ports["table"] = In(memory.ReadPort.Signature(
                addr_width=ceil_log2(2 * config.table_beats),
                shape=config.table_layout)).array(config.po)
        return ports

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        po, t = cfg.po, cfg.t
        # Five register stages that all advance together (``en``) unless y stalls:
        #   1: y = acc + bias     2: p = y * mult     3, 4: round_shift_saturate (shift;
        #   round, zero point, saturate to the mode)  5: GELU table read (or the value).
        head_info, head_chan = self.tile.payload.info, self.tile.payload.channels
        row = Signal(range(t))
        keep = row < head_info.rows
        beat = data.StructLayout({
            "token": TOKEN_BITS, "fold": DIM_BITS, "score": SCORE_BITS, "last": 1,
            "bank": 1, "zero_point": signed(16), "mode": OutMode, "gelu": 1,
        })
        valid = Signal(OUTPUT_STAGES)
        info = [Signal(beat, name=f"info_{n + 1}") for n in range(OUTPUT_STAGES)]
        en = ~valid[-1] | self.y.ready
        take = self.acc.valid & self.tile.valid & (en | ~keep)
        m.d.comb += [
            self.acc.ready.eq(take),
            self.tile.ready.eq(take & self.acc.payload.last),
            self.y.valid.eq(valid[-1]),
            self.y.payload.token.eq(info[-1].token),
            self.y.payload.fold.eq(info[-1].fold),
            self.y.payload.score.eq(info[-1].score),
            self.y.payload.last.eq(info[-1].last),
            self.table_release.eq(Mux(valid[-1] & self.y.ready & info[-1].last,
                                      1 << info[-1].bank, 0)),
        ]
        with m.If(take):
            m.d.sync += row.eq(Mux(self.acc.payload.last, 0, row + 1))
        with m.If(en):
            m.d.sync += [
                valid.eq(Cat(take & keep, valid[:-1])),
                info[0].token.eq(head_info.tokens[row]),
                info[0].score.eq(head_info.scores[row]),
                info[0].fold.eq(head_info.fold),
                info[0].last.eq(head_info.last & (row + 1 == head_info.rows)),
                info[0].bank.eq(head_info.bank),
                info[0].zero_point.eq(head_info.zero_point),
                info[0].mode.eq(head_info.mode),
                info[0].gelu.eq(head_info.gelu),
            ]
            m.d.sync += [info[n + 1].eq(info[n]) for n in range(OUTPUT_STAGES - 1)]
        lo = Mux(info[2].mode == OutMode.INT8, -(1 << 7),
                 Mux(info[2].mode == OutMode.INT16, -(1 << 15), -(1 << 31)))
        hi = Mux(info[2].mode == OutMode.INT8, (1 << 7) - 1,
                 Mux(info[2].mode == OutMode.INT16, (1 << 15) - 1, (1 << 31) - 1))
        for c in range(po):
            y1 = Signal(signed(ACC_WIDTH), name=f"y_{c}")
            mult1, shift1, shift2 = (Signal(unsigned(MULT_BITS), name=f"mult_{c}"),
                                     Signal(unsigned(SHIFT_BITS), name=f"shift1_{c}"),
                                     Signal(unsigned(SHIFT_BITS), name=f"shift2_{c}"))
            p2 = Signal(signed(ACC_WIDTH + MULT_BITS + 1), name=f"product_{c}")
            with m.If(en):
                m.d.sync += [
                    y1.eq(self.acc.payload.acc[c] + head_chan.bias[c]),
                    mult1.eq(head_chan.mult[c]),
                    shift1.eq(head_chan.shift[c]),
                    p2.eq(y1 * mult1),
                    shift2.eq(shift1),
                ]
            r3 = round_shift_saturate(m, en, p2, shift2, signed(cfg.out_width), lo=lo, hi=hi,
                                      offset=info[2].zero_point, name=f"requant_{c}")
            if cfg.gelu:
                # Stage 5: the table group of this lane's code; the entry is picked after.
                code = (r3[:8] ^ 0x80).as_unsigned()         # q + 128
                pick = Signal(range(cfg.entries_per_beat), name=f"pick_{c}")
                rd = self.table[c]
                m.d.comb += [rd.en.eq(en),
                             rd.addr.eq(Mux(info[3].bank, cfg.table_beats, 0)
                                        + (code >> ceil_log2(cfg.entries_per_beat)))]
                r4 = Signal(signed(cfg.out_width), name=f"value_{c}")
                with m.If(en):
                    m.d.sync += [pick.eq(code), r4.eq(r3)]
                m.d.comb += self.y.payload.data[c].eq(
                    Mux(info[4].gelu, rd.data[pick], r4))
            else:
                r4 = Signal(signed(cfg.out_width), name=f"value_{c}")
                with m.If(en):
                    m.d.sync += r4.eq(r3)
                m.d.comb += self.y.payload.data[c].eq(r4)
        return m


class LinearKernel(ConfigComponent):
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

    config_type = LinearConfig

    def members(self, config):
        return {
            "w": In(stream.Signature(unsigned(config.bus_width))),
            "x": In(stream.Signature(x_layout(config.pi))),
            "y": Out(stream.Signature(y_layout(config.po, config.out_width))),
        }

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
        m.submodules.loader = loader = WeightLoader(cfg)
        wiring.connect(m, wiring.flipped(self.w), loader.w)
        wiring.connect(m, loader.weights, weights.write_port())
        wiring.connect(m, loader.channels, channels.write_port())
        x_wr = tokens.write_port(granularity=1)
        w_rd = weights.read_port()
        c_rd = channels.read_port()
        x_rd = tokens.read_port()
        head = loader.headers
        kb = [head[b].kb for b in range(2)]
        nb = [head[b].nb for b in range(2)]
        bank_full = loader.full
        bank_release = loader.release   # set by the sequencer for one cycle
        # GELU table bank b is read by the output pipeline until the last output of the
        # batch that uses it, later than the weights: it has its own busy flag.
        table_release = loader.table_release    # set by the output pipeline for one cycle
        table_rd = []
        if cfg.gelu:
            # Entries grouped by beat; each lane reads a group and picks its entry.
            m.submodules.gelu_table = table = memory.Memory(
                shape=cfg.table_layout, depth=2 * cfg.table_beats, init=[])
            wiring.connect(m, loader.table, table.write_port())
            table_rd = [table.read_port() for _ in range(po)]

        # ---- token writer: x beats -> token memory (2 groups of t rows) -------------
        x_bank = Signal()           # bank of the matrix the current batch uses
        x_group = Signal()          # group slot being written
        x_row = Signal(range(t))
        x_slice = Signal(DIM_BITS)
        group_ready = Signal(2)
        group_release = Signal(2)
        group_tokens = [Signal(data.ArrayLayout(TOKEN_BITS, t), name=f"group_tokens_{g}")
                        for g in range(2)]
        group_scores = [Signal(data.ArrayLayout(SCORE_BITS, t), name=f"group_scores_{g}")
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
                            m.d.sync += [group_tokens[g][x_row].eq(self.x.payload.token),
                                         group_scores[g][x_row].eq(self.x.payload.score)]
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
        head_s = Signal(HEADER)
        m.d.comb += head_s.eq(Mux(s_bank, head[1], head[0]))
        s1_valid = Signal()
        s1_last = Signal()                 # final beat of a tile
        s1_info = Signal(tile_layout(cfg).members["info"])

        side = fifo.SyncFIFOBuffered(width=tile_layout(cfg).size,
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
                s1_info.scores.eq(Mux(s_group, group_scores[1], group_scores[0])),
                s1_info.bank.eq(s_bank),
                s1_info.zero_point.eq(head_s.zero_point),
                s1_info.mode.eq(head_s.mode),
                s1_info.gelu.eq(head_s.gelu),
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

        # ---- output pipeline ------------------------------------------------------------
        m.submodules.output = output = OutputPipeline(cfg)
        wiring.connect(m, array.o, output.acc)
        m.d.comb += [output.tile.valid.eq(side.r_rdy), output.tile.payload.eq(side.r_data),
                     side.r_en.eq(output.tile.ready),
                     table_release.eq(output.table_release)]
        if cfg.gelu:
            for port, lane in zip(table_rd, output.table):
                wiring.connect(m, port, lane)
        wiring.connect(m, output.y, wiring.flipped(self.y))
        return m


def image_beats(config, kb, nb, gelu=False):
    """``w`` beats of a matrix image of ``kb x nb`` folds (with a GELU table if ``gelu``)."""
    return (1 + kb * nb * config.beats_per(config.weight_layout)
            + nb * config.beats_per(channel_layout(config.po))
            + (config.table_beats if gelu else 0))


def exp_cycles(config, jobs):
    """Expected cycles for a sequence of jobs (FINN's ``exp_cycles``).

    A job is ``(d_in, d_out, tokens)`` or ``(d_in, d_out, tokens, gelu)``: a matrix
    image on ``w`` (with a GELU table if ``gelu``) followed by a batch of ``tokens``
    rows on ``x``; sources run at full rate from cycle 0 and ``y`` is always
    ready. The count runs from cycle 0 to the last ``y`` transfer, inclusive.

    The recurrences follow the hardware. Weight bank ``n % 2`` is refilled once
    the batch that used it has issued its last beat; token slot ``g % 2`` once
    group ``g - 2`` has issued; a GELU table once the last gelu batch of its bank
    has left ``y``. The array accepts the last beat of a tile ``kb`` beats after
    the tile starts, and no sooner than ``t`` cycles after the previous tile's
    last beat (the array's tile spacing); a group starts once its rows are
    loaded. A group's final beat is issued when the beat before it is accepted,
    which is when its token slot and, at a batch end, its weight bank are
    released. Outputs leave :data:`OUTPUT_STAGES` cycles after the array's.
    """
    t = config.t
    bpw = config.beats_per(config.weight_layout)
    bpc = config.beats_per(channel_layout(config.po))
    w_end = x_end = -1                          # last w / x beat so far
    accepted = -(1 << 30)                       # last tile's last beat entered the array
    bank_release, slot_release, table_free = [-1, -1], [-1, -1], [0, 0]
    slot, last_y = 0, -1
    for n, job in enumerate(jobs):
        d_in, d_out, tokens, gelu = (*job, False)[:4]
        kb, nb = _ceil_div(d_in, config.pi), _ceil_div(d_out, config.po)
        w_end = max(w_end + 1, bank_release[n % 2] + 1) + 1 + nb * kb * bpw + nb * bpc - 1
        if gelu:
            w_end = max(w_end + 1, table_free[n % 2]) + config.table_beats - 1
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
            last_y = accepted + config.array_latency + rows + OUTPUT_STAGES - 1
        bank_release[n % 2] = release
        if gelu:
            table_free[n % 2] = last_y + 1
    return last_y + 1


def batch_cycles(config, kb, nb, tokens):
    """Cycles from a batch's first ``x`` beat to its last ``y`` beat, inclusive, on an idle
    kernel whose matrix (``kb x nb`` folds) is already loaded; ``x`` at full rate, ``y``
    always ready. The batch part of :func:`exp_cycles` (whose first ``x`` beat follows
    the image's last ``w`` beat)."""
    return exp_cycles(config, [(kb * config.pi, nb * config.po, tokens)]) \
        - image_beats(config, kb, nb)
