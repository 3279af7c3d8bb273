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

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .params import check_int, validating

__all__ = [
    "ACC_WIDTH", "ControlLayout", "operand_layout", "result_layout",
    "ProcessingElement", "Mesh", "SystolicArray", "tile_spacing", "latency", "exp_cycles",
]

#: Accumulator width. The golden spec (``golden.gemm``) guarantees no overflow
#: for reductions of at most ``K_MAX`` = 131071 int8 products.
ACC_WIDTH = 32

MAX_DIM = 64
OPERAND_WIDTHS = range(2, 9)


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
    a_in, b_in : In(ArrayLayout(signed(operand_width), k_lanes))
    ctl_in : In(ControlLayout)
    a_out, b_out, ctl_out : Out
        The inputs, delayed by one cycle.
    result : Out(signed(32))
        Sum of the last finished tile, valid from 2 cycles after its last beat.
    done : Out(1)
        High for one cycle while the accumulator absorbs a last beat; ``result``
        holds the new sum from the next cycle on.
    """

    def __init__(self, k_lanes=1, operand_width=8):
        with validating(self):
            self._k_lanes = check_int("k_lanes", k_lanes, 1, MAX_DIM)
            self._operand_width = check_int("operand_width", operand_width,
                                            OPERAND_WIDTHS.start, OPERAND_WIDTHS.stop - 1)
        lane = data.ArrayLayout(signed(operand_width), k_lanes)
        super().__init__({
            "a_in": In(lane), "b_in": In(lane), "ctl_in": In(ControlLayout()),
            "a_out": Out(lane), "b_out": Out(lane), "ctl_out": Out(ControlLayout()),
            "result": Out(signed(ACC_WIDTH)),
            "done": Out(1),
        })

    @property
    def k_lanes(self):
        return self._k_lanes

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.b_out.eq(self.b_in),
            self.ctl_out.eq(self.ctl_in),
        ]

        # Cycle 0: the dot product of this beat's k_lanes pairs.
        product_width = 2 * self._operand_width + ceil_log2(self._k_lanes)
        product = Signal(signed(product_width))
        product_ctl = Signal(ControlLayout())
        dot = sum(self.a_in[j] * self.b_in[j] for j in range(self._k_lanes))
        m.d.sync += [product.eq(dot), product_ctl.eq(self.ctl_in)]

        # Cycle 1: accumulate; the sum is exact within the spec's K bound.
        acc = Signal(signed(ACC_WIDTH))
        total = Mux(product_ctl.first, 0, acc) + product
        m.d.comb += self.done.eq(product_ctl.valid & product_ctl.last)
        with m.If(product_ctl.valid):
            m.d.sync += acc.eq(total)
        with m.If(self.done):
            m.d.sync += self.result.eq(total)
        return m


class Mesh(wiring.Component):
    """``rows`` x ``cols`` processing elements with registered neighbour links.

    No flow control: the mesh advances every cycle; ``ctl.valid`` marks beats.
    The caller skews the inputs: ``a[r]`` and ``ctl[r]`` must enter ``r`` cycles
    and ``b[c]`` ``c`` cycles after the beat they belong to. With
    ``row_broadcast``, ``a[r]`` and ``ctl[r]`` feed every PE of row ``r`` directly
    (no horizontal registers), so ``b`` enters unskewed and a whole row finishes
    in the same cycle: the choice for wide, short arrays (few token rows, many
    output columns), where skewing ``b`` across the columns would cost
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
        Every PE's held result.
    row_done : Out(rows)
        Bit ``r`` pulses when the last PE of row ``r`` absorbs a last beat; the
        whole row of ``result`` is final from the next cycle on.
    """

    def __init__(self, rows, cols, k_lanes=1, operand_width=8, *, row_broadcast=False):
        with validating(self):
            self._rows, self._cols, self._k_lanes, self._operand_width = _check_array(
                rows, cols, k_lanes, operand_width)
        self._row_broadcast = bool(row_broadcast)
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
        pes = [[ProcessingElement(self._k_lanes, self._operand_width) for _ in range(self._cols)]
               for _ in range(self._rows)]
        for r in range(self._rows):
            for c in range(self._cols):
                pe = pes[r][c]
                m.submodules[f"pe_{r}_{c}"] = pe
                if c == 0 or self._row_broadcast:
                    m.d.comb += [pe.a_in.eq(self.a[r]), pe.ctl_in.eq(self.ctl[r])]
                else:
                    m.d.comb += [pe.a_in.eq(pes[r][c - 1].a_out),
                                 pe.ctl_in.eq(pes[r][c - 1].ctl_out)]
                if r == 0:
                    m.d.comb += pe.b_in.eq(self.b[c])
                else:
                    m.d.comb += pe.b_in.eq(pes[r - 1][c].b_out)
                m.d.comb += self.result[r][c].eq(pe.result)
            m.d.comb += self.row_done[r].eq(pes[r][self._cols - 1].done)
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
    while tiles are at least :attr:`tile_spacing` beats long (max(rows, cols);
    ``rows`` with ``row_broadcast``) and ``o`` keeps up. Shorter tiles are
    accepted at one per ``tile_spacing`` cycles.

    Latency: the first result row of a tile leaves :attr:`latency` cycles after
    the tile's last beat is accepted (``cols + 3``; 4 with ``row_broadcast``),
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

    Members
    -------
    i : In(stream.Signature(operand_layout(rows, cols, k_lanes, operand_width)))
    o : Out(stream.Signature(result_layout(cols)))

    Tested ranges: 1x1 to 8x8 arrays (and 3x16 with ``row_broadcast``), k_lanes
    1..4, operand widths 4 and 8, K from 1 to 131071, random input gaps and
    output backpressure.
    """

    def __init__(self, rows, cols, *, k_lanes=1, operand_width=8, row_broadcast=False):
        with validating(self):
            self._rows, self._cols, self._k_lanes, self._operand_width = _check_array(
                rows, cols, k_lanes, operand_width)
        self._row_broadcast = bool(row_broadcast)
        super().__init__({
            "i": In(stream.Signature(operand_layout(rows, cols, k_lanes, operand_width))),
            "o": Out(stream.Signature(result_layout(cols))),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    k_lanes = property(lambda self: self._k_lanes)
    operand_width = property(lambda self: self._operand_width)
    row_broadcast = property(lambda self: self._row_broadcast)

    @property
    def tile_spacing(self):
        """Minimum number of cycles between the last beats of two tiles."""
        return tile_spacing(self._rows, self._cols, self._row_broadcast)

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
        return latency(self._cols, self._row_broadcast)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        m.submodules.mesh = mesh = Mesh(rows, cols, self._k_lanes, self._operand_width,
                                        row_broadcast=self._row_broadcast)
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
        for c in range(cols):
            b_c = self.i.payload.b[c]
            for stage in range(0 if self._row_broadcast else c):
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


def tile_spacing(rows, cols, row_broadcast=False):
    """Minimum cycles between the last beats of two tiles (see :class:`SystolicArray`)."""
    return rows if row_broadcast else max(rows, cols)


def latency(cols, row_broadcast=False):
    """Cycles from a tile's last beat to its first result row (see :class:`SystolicArray`)."""
    return (0 if row_broadcast else cols - 1) + 4


def exp_cycles(m, k, n, *, rows, cols, k_lanes=1, row_broadcast=False):
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
    period = max(beats, tile_spacing(rows, cols, row_broadcast))
    last_beat = (beats - 1) + (tiles - 1) * period
    return last_beat + latency(cols, row_broadcast) + rows
