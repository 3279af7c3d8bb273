"""Activation buffers: one memory each, shared by the engines through OR-ed client ports.

A buffer is ``rows x pitch`` memory words (:meth:`rtl.config.AcceleratorConfig.
memory_word_bytes`: the wider of a unit word and a load-path word), written in
granules (the narrowest write: a LayerNorm beat, a unit word or a load-path word)::

    r0 .. r{n-1}  {en, addr} --OR--> read port --> data (to every reader, next cycle)
    w0 .. w{m-1}  {en[granule], addr, data} --OR--> write port (granularity: one granule)

The program's tokens keep two queues off one buffer at the same time and the
compute queue runs one instruction at a time, so at most one client drives a port
in any cycle; idle clients drive zeros and the ports are their OR. The read port
is transparent (a read of a word written in the same cycle sees the new data).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..compute.constmul import times

__all__ = ["read_signature", "write_signature", "Buffer", "row_layout", "beat_layout",
           "BufferReader", "rows_command_layout", "entry_layout", "RowGenerator"]


def read_signature(addr_bits, word_bits):
    """A read client (the client's view): ``en`` and ``addr`` out, ``data`` in (next cycle)."""
    return wiring.Signature({"en": Out(1), "addr": Out(addr_bits), "data": In(word_bits)})


def write_signature(addr_bits, granules, granule_bits):
    """A write client: ``en`` (one bit per granule), ``addr`` and ``data`` out."""
    return wiring.Signature({"en": Out(granules), "addr": Out(addr_bits),
                             "data": Out(granules * granule_bits)})


class Buffer(wiring.Component):
    """One activation buffer (see the module docstring).

    Parameters
    ----------
    depth : int
        Memory words.
    granules, granule_bits : int
        A memory word is ``granules`` granules of ``granule_bits``.
    readers, writers : int
        Client ports.

    Members
    -------
    r0 .. : In(read_signature(...))
    w0 .. : In(write_signature(...))
    """

    def __init__(self, depth, granules, granule_bits, readers, writers):
        self.depth, self.granules, self.granule_bits = depth, granules, granule_bits
        self.addr_bits = max(1, (depth - 1).bit_length())
        word = granules * granule_bits
        super().__init__({
            **{f"r{n}": In(read_signature(self.addr_bits, word)) for n in range(readers)},
            **{f"w{n}": In(write_signature(self.addr_bits, granules, granule_bits))
               for n in range(writers)},
        })
        self._readers, self._writers = readers, writers

    @property
    def word_bits(self):
        return self.granules * self.granule_bits

    def elaborate(self, platform):
        m = Module()
        shape = data.ArrayLayout(self.granule_bits, self.granules)
        m.submodules.storage = storage = memory.Memory(shape=shape, depth=self.depth, init=[])
        wr = storage.write_port(granularity=1)        # one array element: a granule
        rd = storage.read_port(transparent_for=(wr,))
        writers = [getattr(self, f"w{n}") for n in range(self._writers)]
        readers = [getattr(self, f"r{n}") for n in range(self._readers)]

        def any_of(values, width):
            out = 0
            for v in values:
                out = out | v
            return out if values else Cat(*[0] * width)

        m.d.comb += [wr.en.eq(any_of([w.en for w in writers], self.granules)),
                     wr.addr.eq(any_of([w.addr for w in writers], self.addr_bits)),
                     wr.data.eq(any_of([w.data for w in writers], self.word_bits)),
                     rd.en.eq(any_of([r.en for r in readers], 1)),
                     rd.addr.eq(any_of([r.addr for r in readers], self.addr_bits))]
        for r in readers:
            m.d.comb += r.data.eq(rd.data)
        return m


def row_layout(row_bits, col_bits):
    """One row of a read: which row, its first sub-word, the token's gate score, and ``last``
    on the final row of the read."""
    return data.StructLayout({"row": row_bits, "col": col_bits, "score": 8, "last": 1})


def beat_layout(sub_bits, row_bits):
    """One beat out of a :class:`BufferReader`: a sub-word of a row; ``end`` on the last beat
    of a row, ``last`` on the last beat of the read."""
    return data.StructLayout({"data": sub_bits, "row": row_bits, "score": 8, "end": 1,
                              "last": 1})


class BufferReader(wiring.Component):
    """Reads rows of sub-words from a :class:`Buffer`, one sub-word per cycle, read-ahead.

    Parameters
    ----------
    addr_bits, word_bits : int
        The buffer's address and memory word widths.
    sub_bits : int
        Bits of one output beat (divides ``word_bits``): a unit word, a LayerNorm beat,
        a load-path word.
    pitch : int
        Memory words per buffer row.
    row_bits, col_bits : int
        Widths of a row index and of a sub-word index within a row.

    Members
    -------
    words : In(col_bits)
        Sub-words per row (held during a read).
    rows : In(stream.Signature(row_layout(row_bits, col_bits)))
        The rows to read, in order.
    bus : Out(read_signature(addr_bits, word_bits))
    o : Out(stream.Signature(beat_layout(sub_bits, row_bits)))

    Latency: a row taken in cycle ``c`` has its first beat valid in ``c + 3`` (the
    address in ``c + 1``, the data in ``c + 2`` into a FIFO). Throughput: one beat per
    cycle while ``o`` is ready; the FIFO of :data:`DEPTH` entries never runs dry at
    that pace. Backpressure on ``o`` stalls the reads, nothing is lost.
    """

    DEPTH = 4

    def __init__(self, addr_bits, word_bits, sub_bits, pitch, row_bits, col_bits):
        assert word_bits % sub_bits == 0
        self._p = (addr_bits, word_bits, sub_bits, pitch, row_bits, col_bits)
        super().__init__({
            "words": In(col_bits),
            "rows": In(stream.Signature(row_layout(row_bits, col_bits))),
            "bus": Out(read_signature(addr_bits, word_bits)),
            "o": Out(stream.Signature(beat_layout(sub_bits, row_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        addr_bits, word_bits, sub_bits, pitch, row_bits, col_bits = self._p
        per = word_bits // sub_bits
        beat = beat_layout(sub_bits, row_bits)
        # The current row and sub-word (registered), the reads in flight, the FIFO.
        active = Signal()
        row = Signal(row_layout(row_bits, col_bits))
        j = Signal(col_bits)
        info = data.StructLayout({"slot": range(per), "row": row_bits, "score": 8, "end": 1,
                                  "last": 1})
        m.submodules.fifo = out = fifo.SyncFIFO(width=beat.size, depth=self.DEPTH)
        inflight = Signal(range(self.DEPTH + 1))
        r_valid = Signal()
        r_info = Signal(info)
        room = out.level + inflight < self.DEPTH
        read = active & room
        end = j + 1 == self.words
        column = row.col + j
        shift = exact_log2(per)
        m.d.comb += [self.bus.en.eq(read),
                     self.bus.addr.eq(Mux(read, times(row.row, pitch) + (column >> shift), 0)),
                     self.rows.ready.eq(~active | (read & end))]
        with m.If(read):
            m.d.sync += j.eq(Mux(end, 0, j + 1))
            with m.If(end):
                m.d.sync += active.eq(0)
        with m.If(self.rows.valid & self.rows.ready):
            m.d.sync += [active.eq(1), row.eq(self.rows.payload), j.eq(0)]
        m.d.sync += [r_valid.eq(read),
                     r_info.eq(Cat(column[:shift], row.row, row.score, end, end & row.last))]
        m.d.sync += inflight.eq(inflight + read - r_valid)
        words = self.bus.data
        chosen = Signal(sub_bits)
        with m.Switch(r_info.slot):
            for s in range(per):
                with m.Case(s):
                    m.d.comb += chosen.eq(words[s * sub_bits:(s + 1) * sub_bits])
        m.d.comb += [out.w_en.eq(r_valid),
                     out.w_data.eq(Cat(chosen, r_info.row, r_info.score, r_info.end,
                                       r_info.last)),
                     self.o.valid.eq(out.r_rdy), self.o.payload.eq(out.r_data),
                     out.r_en.eq(self.o.ready)]
        return m


def rows_command_layout(row_bits, col_bits, entry_bits):
    """What a :class:`RowGenerator` runs: ``groups`` groups of ``rows`` rows each; group ``g``
    reads columns from ``col + g * col_step``; rows from ``row`` (``from_table = 0``) or the
    ``rows`` table entries from ``entry`` (``from_table = 1``: the routing table's queue)."""
    return data.StructLayout({"row": row_bits, "rows": row_bits, "col": col_bits,
                              "col_step": col_bits, "groups": 8, "from_table": 1,
                              "entry": entry_bits})


def entry_layout(row_bits):
    """One routing-table entry: a token and its Q0.8 gate score."""
    return data.StructLayout({"token": row_bits, "score": 8})


class RowGenerator(wiring.Component):
    """The row stream of a :class:`BufferReader`: a range of rows or a routing-table queue.

    Two stages: an index (a row counter, or the table address), then the row (the
    counter's value, or the table's data): the first row is valid 2 cycles after
    ``start``, then one per cycle while ``o`` is ready. ``last`` marks the final row of
    each group (the attention kernel's tensors end per head).

    Members
    -------
    start : In(1)
    command : In(rows_command_layout(...))
        Taken with ``start``.
    table : Out(read_signature(entry_bits, entry_layout(row_bits).size))
    o : Out(stream.Signature(row_layout(row_bits, col_bits)))
    busy : Out(1)
    """

    def __init__(self, row_bits, col_bits, entry_bits):
        self._p = (row_bits, col_bits, entry_bits)
        super().__init__({
            "start": In(1), "command": In(rows_command_layout(row_bits, col_bits, entry_bits)),
            "table": Out(read_signature(entry_bits, entry_layout(row_bits).size)),
            "o": Out(stream.Signature(row_layout(row_bits, col_bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        row_bits, col_bits, entry_bits = self._p
        cmd = Signal(rows_command_layout(row_bits, col_bits, entry_bits))
        active = Signal()
        i = Signal(row_bits)
        g = Signal(8)
        col = Signal(col_bits)
        # Stage 2: the row on o, and whether it came from the table.
        o_valid = Signal()
        o_row = Signal(row_layout(row_bits, col_bits))
        o_table = Signal()
        advance = ~o_valid | self.o.ready
        step = active & advance
        row_end = i + 1 == cmd.rows
        group_end = g + 1 == cmd.groups
        m.d.comb += [self.table.en.eq(step & cmd.from_table),
                     self.table.addr.eq(Mux(step & cmd.from_table, cmd.entry + i, 0)),
                     self.busy.eq(active | o_valid)]
        entry = entry_layout(row_bits)(self.table.data)
        with m.If(advance):
            m.d.sync += o_valid.eq(step)
        with m.If(step):
            m.d.sync += [o_row.row.eq(cmd.row + i), o_row.col.eq(col), o_row.score.eq(0),
                         o_row.last.eq(row_end), o_table.eq(cmd.from_table)]
            with m.If(row_end):
                m.d.sync += [i.eq(0), g.eq(g + 1), col.eq(col + cmd.col_step)]
                with m.If(group_end):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += i.eq(i + 1)
        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.eq(o_row)]
        with m.If(o_table):
            m.d.comb += [self.o.payload.row.eq(entry.token), self.o.payload.score.eq(entry.score)]
        with m.If(self.start):
            m.d.sync += [cmd.eq(self.command), active.eq(self.command.rows != 0), i.eq(0),
                         g.eq(0), col.eq(self.command.col)]
        return m
