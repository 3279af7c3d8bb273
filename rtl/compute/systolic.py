"""Output-stationary systolic int8 MAC array.

Hierarchy (gemmini / CFU-Playground style)::

    ProcessingElement      one dot product of ``k_lanes`` int8 pairs per cycle, int32 accumulator
      -> Mesh              rows x cols PEs, registered neighbour links, no flow control
        -> SystolicArray   skew of operands in, result rows out through a FIFO, stream ports,
                           all flow control (credits and tile spacing)

Dataflow: output-stationary. PE (r, c) owns output element (r, c) of the current
tile. Row operands ``a[r]`` (one token's ``k_lanes`` input features) enter from the
left, skewed by ``r`` cycles, and move right one PE per cycle; column operands
``b[c]`` (``k_lanes`` weights of output channel ``c``) enter from the top, skewed by
``c`` cycles, and move down. Both meet at PE (r, c) ``r + c`` cycles after the
beat entered. The control flags (valid, first, last) travel with ``a``.

Why output-stationary: this array becomes the reusable linear kernel with
``rows`` = token lanes T, ``cols`` = output parallelism PO and ``k_lanes`` =
input parallelism PI.

* Partial sums never leave the PEs, so any reduction length K (up to the
  int32 bound :data:`golden.gemm.K_MAX`) costs K / k_lanes beats with no
  partial-sum traffic or read-modify-write of an output buffer.
* Nothing is preloaded into the array: weights stream through it from the
  on-chip weight buffers, so switching to another matrix (the next layer, the
  next MoE expert) costs no fill time. A weight-stationary array would have to
  preload a PI x PO tile and amortise it over the tokens, which is poor for
  MoE experts that receive few tokens.
* Each weight slice read from the buffer is reused by all ``rows`` tokens in
  flight, and each token slice by all ``cols`` output channels.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..params import check_int, validating

__all__ = [
    "ACC_WIDTH", "ControlLayout", "operand_layout", "result_layout",
    "ProcessingElement", "Mesh", "SystolicArray", "PACK_SHIFT", "packed_shape", "column_groups",
    "tile_spacing", "latency", "exp_cycles",
]

#: Field spacing of packed operand pairs: an int8 x int8 product fits 17 bits signed.
PACK_SHIFT = 18

#: Accumulator width. The golden spec (``golden.gemm``) guarantees no overflow
#: for reductions of at most ``K_MAX`` = 131071 int8 products.
ACC_WIDTH = 32

MAX_DIM = 64
OPERAND_WIDTHS = range(2, 9)


def packed_shape(operand_width):
    """Shape of a packed operand pair ``b1 * 2**PACK_SHIFT + b0`` (27 bits for int8)."""
    return signed(PACK_SHIFT + operand_width + 1)


class ControlLayout(data.StructLayout):
    """Flags that travel through the mesh with the row operands."""

    def __init__(self):
        super().__init__({"valid": 1, "first": 1, "last": 1})


def operand_layout(rows, cols, k_lanes=1, operand_width=8):
    """Payload of one input beat: one K slice of a tile.

    ``a[r][j]`` is element ``k0 + j`` of tile row ``r`` (a token), ``b[c][j]`` is
    element ``k0 + j`` of tile column ``c`` (an output channel); ``last`` marks
    the final K slice of a tile.
    """
    lane = data.ArrayLayout(signed(operand_width), k_lanes)
    return data.StructLayout({
        "a": data.ArrayLayout(lane, rows),
        "b": data.ArrayLayout(lane, cols),
        "last": 1,
    })


def result_layout(cols):
    """Payload of one output beat: one row of a finished tile, ``last`` on its final row."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(ACC_WIDTH), cols),
        "last": 1,
    })


def _check_array(rows, cols, k_lanes, operand_width):
    return (check_int("rows", rows, 1, MAX_DIM), check_int("cols", cols, 1, MAX_DIM),
            check_int("k_lanes", k_lanes, 1, MAX_DIM),
            check_int("operand_width", operand_width,
                      OPERAND_WIDTHS.start, OPERAND_WIDTHS.stop - 1))


class ProcessingElement(wiring.Component):
    """One MAC cell: ``k_lanes`` signed products summed into an int32 accumulator.

    Pipeline: cycle 0 registers the dot product of ``a_in`` and ``b_in`` (one
    DSP per lane); cycle 1 adds it to the accumulator, which restarts from zero
    on a ``first`` beat. On a ``last`` beat the finished sum is also copied to
    ``result``, where it stays until the next tile's last beat, so draining a
    tile overlaps computing the next. ``a``, ``b`` and the control flags are
    forwarded to the neighbours with one register each.

    Members
    -------
    a_in : In(ArrayLayout(signed(operand_width), k_lanes))
    b_in : In(ArrayLayout(signed(operand_width) or packed_shape(operand_width), k_lanes))
        With ``packed_pair``, each lane carries two columns' operands as
        ``b1 * 2**PACK_SHIFT + b0`` and the PE computes both columns with one
        multiplier per lane (AMD WP486's INT8 packing): one DSP48E2 (27 x 18)
        does two int8 MACs that share the row operand.
    ctl_in : In(ControlLayout)
    a_out, b_out, ctl_out : Out
        The inputs, delayed by one cycle.
    result : Out(ArrayLayout(signed(32), outputs))
        Sum(s) of the last finished tile, valid from 2 cycles after its last beat.
    done : Out(1)
        High for one cycle while the accumulator absorbs a last beat; ``result``
        holds the new sum from the next cycle on.
    """

    def __init__(self, k_lanes=1, operand_width=8, *, packed_pair=False):
        with validating(self):
            self._k_lanes = check_int("k_lanes", k_lanes, 1, MAX_DIM)
            self._operand_width = check_int("operand_width", operand_width,
                                            OPERAND_WIDTHS.start, OPERAND_WIDTHS.stop - 1)
        self._packed_pair = bool(packed_pair)
        lane = data.ArrayLayout(signed(operand_width), k_lanes)
        b_lane = data.ArrayLayout(packed_shape(operand_width) if packed_pair
                                  else signed(operand_width), k_lanes)
        super().__init__({
            "a_in": In(lane), "b_in": In(b_lane), "ctl_in": In(ControlLayout()),
            "a_out": Out(lane), "b_out": Out(b_lane), "ctl_out": Out(ControlLayout()),
            "result": Out(data.ArrayLayout(signed(ACC_WIDTH), self.outputs)),
            "done": Out(1),
        })

    @property
    def k_lanes(self):
        return self._k_lanes

    @property
    def outputs(self):
        """Output columns this PE computes: 2 with ``packed_pair``, else 1."""
        return 2 if self._packed_pair else 1

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.b_out.eq(self.b_in),
            self.ctl_out.eq(self.ctl_in),
        ]

        # Cycle 0: the dot product(s) of this beat's k_lanes pairs.
        lanes = range(self._k_lanes)
        if not self._packed_pair:
            dots = [sum(self.a_in[j] * self.b_in[j] for j in lanes)]
        else:
            # One multiplier per lane: a * (b1 * 2**S + b0) = a*b1 * 2**S + a*b0. The
            # low product fits S bits signed, so it is the sign-extended low field;
            # the high product is the rest, plus one when the low field is negative.
            low, high = [], []
            for j in lanes:
                packed = Signal(signed(self._operand_width + packed_shape(self._operand_width).width),
                                name=f"packed_product_{j}")
                m.d.comb += packed.eq(self.a_in[j] * self.b_in[j])
                low.append(packed[:PACK_SHIFT].as_signed())
                high.append((packed >> PACK_SHIFT) + packed[PACK_SHIFT - 1])
            dots = [sum(low), sum(high)]
        product_width = 2 * self._operand_width + ceil_log2(self._k_lanes) + 1
        product_ctl = Signal(ControlLayout())
        m.d.sync += product_ctl.eq(self.ctl_in)
        m.d.comb += self.done.eq(product_ctl.valid & product_ctl.last)

        # Cycle 1: accumulate; the sum is exact within the spec's K bound.
        for n, dot in enumerate(dots):
            product = Signal(signed(product_width), name=f"product_{n}")
            acc = Signal(signed(ACC_WIDTH), name=f"acc_{n}")
            m.d.sync += product.eq(dot)
            total = Mux(product_ctl.first, 0, acc) + product
            with m.If(product_ctl.valid):
                m.d.sync += acc.eq(total)
            with m.If(self.done):
                m.d.sync += self.result[n].eq(total)
        return m


def column_groups(cols, dsp_packing=False):
    """The output columns each PE column computes: pairs with ``dsp_packing``, else singles."""
    step = 2 if dsp_packing else 1
    return [tuple(range(c, min(c + step, cols))) for c in range(0, cols, step)]


class Mesh(wiring.Component):
    """``rows`` x ``cols`` outputs on a grid of processing elements with registered links.

    No flow control: the mesh advances every cycle; ``ctl.valid`` marks beats.
    PE column ``g`` computes the output columns ``column_groups(cols, dsp_packing)[g]``
    (one, or a pair with ``dsp_packing``). The caller skews the inputs: ``a[r]``
    and ``ctl[r]`` must enter ``r`` cycles and the ``b`` of PE column ``g``
    ``g`` cycles after the beat they belong to. With ``row_broadcast``, ``a[r]``
    and ``ctl[r]`` feed every PE of row ``r`` directly (no horizontal
    registers), so ``b`` enters unskewed and a whole row finishes in the same
    cycle: the choice for wide, short arrays (few token rows, many output
    columns), where skewing ``b`` across the columns would cost
    ``cols * (cols - 1) / 2`` operand registers.

    Members
    -------
    a : In(ArrayLayout(lane, rows))
        Row operands at the left edge.
    ctl : In(ArrayLayout(ControlLayout, rows))
        Per-row control at the left edge, skewed like ``a``.
    b : In(ArrayLayout(lane, cols))
        Column operands at the top edge.
    result : Out(ArrayLayout(ArrayLayout(signed(32), cols), rows))
        Every output's held result.
    row_done : Out(rows)
        Bit ``r`` pulses when the last PE of row ``r`` absorbs a last beat; the
        whole row of ``result`` is final from the next cycle on.
    """

    def __init__(self, rows, cols, k_lanes=1, operand_width=8, *, row_broadcast=False,
                 dsp_packing=False):
        with validating(self):
            self._rows, self._cols, self._k_lanes, self._operand_width = _check_array(
                rows, cols, k_lanes, operand_width)
        self._row_broadcast = bool(row_broadcast)
        self._groups = column_groups(cols, dsp_packing)
        lane = data.ArrayLayout(signed(operand_width), k_lanes)
        super().__init__({
            "a": In(data.ArrayLayout(lane, rows)),
            "ctl": In(data.ArrayLayout(ControlLayout(), rows)),
            "b": In(data.ArrayLayout(lane, cols)),
            "result": Out(data.ArrayLayout(data.ArrayLayout(signed(ACC_WIDTH), cols), rows)),
            "row_done": Out(rows),
        })

    def elaborate(self, platform):
        m = Module()
        groups = self._groups
        pes = [[ProcessingElement(self._k_lanes, self._operand_width,
                                  packed_pair=len(group) == 2) for group in groups]
               for _ in range(self._rows)]
        for g, group in enumerate(groups):
            # The top edge: a single column's operands, or a pair packed for one multiplier.
            b_top = self.b[group[0]]
            if len(group) == 2:
                b_top = Signal(pes[0][g].b_in.shape(), name=f"b_packed_{g}")
                m.d.comb += [b_top[j].eq((self.b[group[1]][j] << PACK_SHIFT) + self.b[group[0]][j])
                             for j in range(self._k_lanes)]
            for r in range(self._rows):
                pe = pes[r][g]
                m.submodules[f"pe_{r}_{g}"] = pe
                if g == 0 or self._row_broadcast:
                    m.d.comb += [pe.a_in.eq(self.a[r]), pe.ctl_in.eq(self.ctl[r])]
                else:
                    m.d.comb += [pe.a_in.eq(pes[r][g - 1].a_out),
                                 pe.ctl_in.eq(pes[r][g - 1].ctl_out)]
                m.d.comb += pe.b_in.eq(b_top if r == 0 else pes[r - 1][g].b_out)
                for n, c in enumerate(group):
                    m.d.comb += self.result[r][c].eq(pe.result[n])
        for r in range(self._rows):
            m.d.comb += self.row_done[r].eq(pes[r][-1].done)
        return m


class SystolicArray(wiring.Component):
    """Output-stationary systolic MAC array with stream ports.

    Computes tiles of ``C = A @ B`` where a tile is ``rows`` x ``cols`` outputs and
    each input beat carries one slice of ``k_lanes`` along the reduction
    dimension K (see :func:`operand_layout`). A tile is the beats up to and
    including one with ``last`` set; its result leaves on ``o`` as ``rows`` beats,
    row 0 first, ``last`` set on the final row (see :func:`result_layout`).
    Products are exact; sums are exact for K <= ``golden.gemm.K_MAX`` total
    products (131071), the int32 bound of the spec ``golden.gemm.int8_matmul``.

    Throughput: one beat per cycle, i.e. ``rows * cols * k_lanes`` MACs per cycle,
    while tiles are at least :attr:`tile_spacing` beats long (max(rows, PE
    columns); ``rows`` with ``row_broadcast``) and ``o`` keeps up. Shorter tiles are
    accepted at one per ``tile_spacing`` cycles.

    Latency: the first result row of a tile leaves :attr:`latency` cycles after
    the tile's last beat is accepted (PE columns + 3; 4 with ``row_broadcast``),
    the others on the following cycles.

    Backpressure: the mesh never stalls. Results wait in a FIFO of
    :attr:`fifo_rows` rows (two or three tiles); the last beat of a tile is accepted only when the FIFO has room
    reserved for all its rows, so ``i.ready`` drops on a tile's last beat while
    ``o`` is backpressured (``i.ready`` depends on ``i.payload.last``).

    Parameters
    ----------
    rows : int, 1..64
        Tile rows (token lanes).
    cols : int, 1..64
        Tile columns (output channels).
    k_lanes : int, 1..64
        Reduction elements per beat.
    operand_width : int, 2..8
        Signed operand width in bits.
    row_broadcast : bool
        Feed each row operand to all columns at once instead of passing it
        along the row (see :class:`Mesh`).
    dsp_packing : bool
        Compute pairs of columns with one multiplier per lane (see
        :class:`ProcessingElement`): half the DSP48E2s on UltraScale+. Other
        families gain nothing (ECP5's 18 x 18 multipliers cannot take the
        27-bit packed operand).

    Members
    -------
    i : In(stream.Signature(operand_layout(rows, cols, k_lanes, operand_width)))
    o : Out(stream.Signature(result_layout(cols)))

    Tested ranges: 1x1 to 8x8 arrays (and 3x16 with ``row_broadcast``), k_lanes
    1..4, operand widths 4 and 8, K from 1 to 131071, random input gaps and
    output backpressure.
    """

    def __init__(self, rows, cols, *, k_lanes=1, operand_width=8, row_broadcast=False,
                 dsp_packing=False):
        with validating(self):
            self._rows, self._cols, self._k_lanes, self._operand_width = _check_array(
                rows, cols, k_lanes, operand_width)
        self._row_broadcast = bool(row_broadcast)
        self._dsp_packing = bool(dsp_packing)
        super().__init__({
            "i": In(stream.Signature(operand_layout(rows, cols, k_lanes, operand_width))),
            "o": Out(stream.Signature(result_layout(cols))),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    k_lanes = property(lambda self: self._k_lanes)
    operand_width = property(lambda self: self._operand_width)
    row_broadcast = property(lambda self: self._row_broadcast)
    dsp_packing = property(lambda self: self._dsp_packing)

    @property
    def tile_spacing(self):
        """Minimum number of cycles between the last beats of two tiles."""
        return tile_spacing(self._rows, self._cols, self._row_broadcast, self._dsp_packing)

    @property
    def fifo_rows(self):
        """Result rows the output FIFO holds.

        A tile's rows are reserved when its last beat is accepted and released as
        they leave, ``latency + rows`` cycles later; to accept a tile every
        ``tile_spacing`` cycles the FIFO holds that many cycles' worth of tiles.
        """
        return self._rows * -(-(self.latency + self._rows) // self.tile_spacing)

    @property
    def latency(self):
        """Cycles from accepting a tile's last beat to its first result row on ``o``.

        Mesh: the beat reaches the last column after ``cols - 1`` registers (none
        with ``row_broadcast``), the PE pipeline adds 2 (product, accumulate), the
        row is latched into the FIFO (1) and the buffered FIFO presents it one
        cycle later (1).
        """
        return latency(self._cols, self._row_broadcast, self._dsp_packing)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        m.submodules.mesh = mesh = Mesh(rows, cols, self._k_lanes, self._operand_width,
                                        row_broadcast=self._row_broadcast,
                                        dsp_packing=self._dsp_packing)
        m.submodules.results = results = fifo.SyncFIFOBuffered(
            width=len(self.o.payload.as_value()), depth=self.fifo_rows)

        # Flow control: reserve FIFO room for a whole tile when its last beat is
        # accepted, and keep last beats tile_spacing apart so that a tile's
        # results are read before the next tile overwrites them and result rows
        # of consecutive tiles never collide on the FIFO write port.
        credits = Signal(range(self.fifo_rows + 1), init=self.fifo_rows)
        since_last = Signal(range(self.tile_spacing + 1), init=self.tile_spacing)
        tile_ok = (credits >= rows) & (since_last >= self.tile_spacing)
        m.d.comb += self.i.ready.eq(~self.i.payload.last | tile_ok)
        accept = self.i.valid & self.i.ready
        accept_last = accept & self.i.payload.last

        with m.If(accept_last):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < self.tile_spacing):
            m.d.sync += since_last.eq(since_last + 1)
        read_row = self.o.valid & self.o.ready
        m.d.sync += credits.eq(credits - Mux(accept_last, rows, 0) + read_row)

        # The first beat of a tile is the one after a last beat.
        first = Signal(init=1)
        with m.If(accept):
            m.d.sync += first.eq(self.i.payload.last)

        # Skew: row r and its control by r cycles, column c by c cycles.
        ctl = Signal(ControlLayout())
        m.d.comb += [ctl.valid.eq(accept), ctl.first.eq(first), ctl.last.eq(self.i.payload.last)]
        for r in range(rows):
            a_r, ctl_r = self.i.payload.a[r], ctl
            for stage in range(r):
                a_d = Signal.like(a_r, name=f"a_skew_{r}_{stage}")
                ctl_d = Signal(ControlLayout(), name=f"ctl_skew_{r}_{stage}")
                m.d.sync += [a_d.eq(a_r), ctl_d.eq(ctl_r)]
                a_r, ctl_r = a_d, ctl_d
            m.d.comb += [mesh.a[r].eq(a_r), mesh.ctl[r].eq(ctl_r)]
        groups = column_groups(cols, self._dsp_packing)
        for c in range(cols):
            b_c = self.i.payload.b[c]
            group = next(g for g, members in enumerate(groups) if c in members)
            for stage in range(0 if self._row_broadcast else group):
                b_d = Signal.like(b_c, name=f"b_skew_{c}_{stage}")
                m.d.sync += b_d.eq(b_c)
                b_c = b_d
            m.d.comb += mesh.b[c].eq(b_c)

        # Drain: rows finish one per cycle; latch the finished row into the FIFO.
        row_ready = Signal(rows)
        m.d.sync += row_ready.eq(mesh.row_done)
        row = Signal(result_layout(cols))
        for r in range(rows):
            with m.If(row_ready[r]):
                m.d.comb += [row.acc.eq(mesh.result[r]), row.last.eq(r == rows - 1)]
        m.d.comb += [
            results.w_data.eq(row),
            results.w_en.eq(row_ready.any()),
            self.o.payload.eq(results.r_data),
            self.o.valid.eq(results.r_rdy),
            results.r_en.eq(self.o.ready),
        ]
        return m


def tile_spacing(rows, cols, row_broadcast=False, dsp_packing=False):
    """Minimum cycles between the last beats of two tiles (see :class:`SystolicArray`)."""
    return rows if row_broadcast else max(rows, len(column_groups(cols, dsp_packing)))


def latency(cols, row_broadcast=False, dsp_packing=False):
    """Cycles from a tile's last beat to its first result row (see :class:`SystolicArray`)."""
    return (0 if row_broadcast else len(column_groups(cols, dsp_packing)) - 1) + 4


def exp_cycles(m, k, n, *, rows, cols, k_lanes=1, row_broadcast=False, dsp_packing=False):
    """Expected cycles for ``(m x k) @ (k x n)`` on a ``rows x cols`` array (FINN's ``exp_cycles``).

    Counts from the cycle the first beat is accepted to the cycle the last
    result row leaves, inclusive, with a source that never pauses and a sink
    that is always ready. The folded shape is ``ceil(m/rows) * ceil(n/cols)``
    tiles of ``ceil(k/k_lanes)`` beats; consecutive tiles' last beats are at
    least ``tile_spacing`` cycles apart.
    """
    tiles = -(-m // rows) * -(-n // cols)
    if tiles == 0:
        return 0
    beats = max(1, -(-k // k_lanes))
    period = max(beats, tile_spacing(rows, cols, row_broadcast, dsp_packing))
    last_beat = (beats - 1) + (tiles - 1) * period
    return last_beat + latency(cols, row_broadcast, dsp_packing) + rows
