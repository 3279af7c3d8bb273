"""Integer GELU: a 256-entry int8 -> int8 table per lane, exactly ``golden.gelu.gelu_int``.

The table is built at export time (``golden.gelu.gelu_table``) and loaded at run
time, so the datapath is a memory read and no arithmetic. Table ordering,
everywhere in this module: **entry** ``q + 128`` **holds the output code of input
code** ``q`` (``q`` in -128..127), so the memory address of a code is its two's
complement bits with the top bit flipped.

Two components:

* :class:`GeluLookup`: the building block. ``banks`` tables of 256 entries (a copy
  per lane), one write port (``entries`` entries per write) and ``lanes`` read
  ports, combinational (``latency=0``, distributed RAM) or registered
  (``latency=1``, block or distributed RAM). No flow control of its own: a
  pipeline stage of whatever instantiates it (e.g. the output stage of
  :mod:`rtl.compute.linear`).
* :class:`GeluUnit`: a streaming unit around a two-bank :class:`GeluLookup`.
  Tables arrive on ``t``; the n-th table applies to the n-th batch on ``i``
  (``last`` on the batch's final beat), and the next table loads while a batch
  runs::

      t (table beats) --> GeluLookup (2 banks x 256 x int8, lanes read ports)
      i {data[lanes], last} ------------^  one registered read per lane --> o
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..params import check_int, validating

__all__ = ["GELU_ENTRIES", "code_address", "GeluLookup", "table_layout", "io_layout",
           "GeluUnit", "exp_cycles"]

#: Entries of a GELU table: one per int8 input code.
GELU_ENTRIES = 256


def code_address(code):
    """The table index of an int8 code value: ``code + 128`` (flip the sign bit)."""
    return (code.as_unsigned() ^ 0x80)[:8]


def _check_entries(entries):
    check_int("entries", entries, 1, GELU_ENTRIES)
    if entries & (entries - 1):
        raise ValueError(f"entries must be a power of two, not {entries}")


class GeluLookup(wiring.Component):
    """``lanes`` parallel lookups in one loadable GELU table (``banks`` tables of 256 int8).

    Parameters
    ----------
    lanes : int, 1..64
        Read ports (one code per lane per cycle).
    banks : int, 1..4
        Tables held at once (2: load the next layer's table while this one is read).
    entries : int, power of two, 1..256
        Entries per write (the width of a load bus in int8 entries).
    latency : 0 or 1
        0: ``read.value`` follows ``read.code`` combinationally (asynchronous
        read; distributed RAM). 1: ``read.value`` is the entry of the code
        presented in the last cycle with ``read.en`` high, and holds while
        ``read.en`` is low (synchronous read; block RAM).

    Members
    -------
    write : In(:meth:`write_signature`)
        ``en``, ``bank``, ``addr`` (entries ``addr * entries .. + entries - 1`` of the
        table, i.e. input codes from ``addr * entries - 128``), ``data`` (int8 x entries).
        A write is visible to reads from the next cycle on.
    read : In(:meth:`read_signature`)
        ``en`` (latency 1 only), ``bank``, ``code`` (int8 x lanes) in; ``value``
        (int8 x lanes) out.

    Resources: one ``banks * 256 x 8`` memory per lane, all written together: 1 BRAM18
    (or LUTRAM) per lane. A read fetches a whole word of ``entries`` entries and then
    picks one (registered read: ``8 * entries`` flip-flops per lane), so keep
    ``entries`` small (4: 32-bit words) and split a wider load bus into several writes.
    """

    @staticmethod
    def write_signature(banks, entries):
        """The table write port, from the writer's side."""
        return wiring.Signature({
            "en": Out(1),
            "bank": Out(range(banks)),
            "addr": Out(range(GELU_ENTRIES // entries)),
            "data": Out(data.ArrayLayout(signed(8), entries)),
        })

    @staticmethod
    def read_signature(lanes, banks):
        """The ``lanes`` read ports, from the reader's side (``value`` comes back)."""
        return wiring.Signature({
            "en": Out(1),
            "bank": Out(range(banks)),
            "code": Out(data.ArrayLayout(signed(8), lanes)),
            "value": In(data.ArrayLayout(signed(8), lanes)),
        })

    def __init__(self, lanes, *, banks=1, entries=1, latency=1):
        with validating(self):
            check_int("lanes", lanes, 1, 64)
            check_int("banks", banks, 1, 4)
            _check_entries(entries)
            check_int("latency", latency, 0, 1)
        self._lanes, self._banks, self._entries, self._latency = lanes, banks, entries, latency
        super().__init__({
            "write": In(self.write_signature(banks, entries)),
            "read": In(self.read_signature(lanes, banks)),
        })

    lanes = property(lambda self: self._lanes)
    banks = property(lambda self: self._banks)
    entries = property(lambda self: self._entries)
    latency = property(lambda self: self._latency)

    def elaborate(self, platform):
        m = Module()
        groups = GELU_ENTRIES // self._entries
        pick_bits = exact_log2(self._entries)
        for lane in range(self._lanes):
            # One copy of the tables per lane (1 write + 1 read port each): what a
            # multi-read-port memory becomes on an FPGA anyway, and Yosys' memory
            # mapper aborts on one memory with 16 read ports.
            m.submodules[f"table_{lane}"] = table = memory.Memory(
                shape=data.ArrayLayout(signed(8), self._entries), depth=self._banks * groups,
                init=[])
            wr = table.write_port()
            m.d.comb += [wr.addr.eq(self.write.bank * groups + self.write.addr),
                         wr.data.eq(self.write.data), wr.en.eq(self.write.en)]
            index = code_address(self.read.code[lane])
            if self._latency:
                rd = table.read_port()
                pick = Signal(range(self._entries), name=f"pick_{lane}")
                with m.If(self.read.en):
                    m.d.sync += pick.eq(index[:pick_bits])
                m.d.comb += rd.en.eq(self.read.en)
            else:
                rd = table.read_port(domain="comb")
                pick = index[:pick_bits]
            m.d.comb += [rd.addr.eq(self.read.bank * groups + (index >> pick_bits)),
                         self.read.value[lane].eq(rd.data[pick])]
        return m


def table_layout(entries):
    """One table beat of ``entries`` int8: beat ``j`` holds entries ``j * entries + n``."""
    return data.ArrayLayout(signed(8), entries)


def io_layout(lanes):
    """One data beat: ``lanes`` int8 codes; ``last`` on the final beat of a batch."""
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "last": 1})


class GeluUnit(wiring.Component):
    """Streaming GELU over ``lanes`` int8 codes per beat, with double-banked loadable tables.

    Parameters
    ----------
    lanes : int, 1..64
    entries : int, power of two, 1..256
        Table entries per ``t`` beat (a table is ``256 // entries`` beats).

    Members
    -------
    t : In(stream.Signature(table_layout(entries)))
        Tables, 256 // entries beats each, entry order as in the module docstring.
        A table goes into the free bank; ``t`` stalls while both banks are in use.
    i : In(stream.Signature(io_layout(lanes)))
        Batches of codes; the n-th batch (ended by ``last``) uses the n-th table.
        ``i`` stalls until its table is loaded.
    o : Out(stream.Signature(io_layout(lanes)))
        ``golden.gelu.gelu_int`` of each code, ``last`` passed through.

    Latency 1 cycle (``o`` valid the cycle after the beat is taken); throughput one
    beat per cycle; a bank is free again the cycle after its batch's ``last`` beat
    is taken. Backpressure: ``i.ready`` follows ``o.ready`` combinationally (a
    one-stage stall-all pipeline). Cycle model: :func:`exp_cycles`.
    Tested: every int8 code x random tables, lanes 1..4 (entries 1, 4, 256), tables
    reloaded between batches, random gaps and backpressure.
    """

    LATENCY = 1

    def __init__(self, lanes, *, entries=4):
        with validating(self):
            check_int("lanes", lanes, 1, 64)
            _check_entries(entries)
        self._lanes, self._entries = lanes, entries
        super().__init__({
            "t": In(stream.Signature(table_layout(entries))),
            "i": In(stream.Signature(io_layout(lanes))),
            "o": Out(stream.Signature(io_layout(lanes))),
        })

    lanes = property(lambda self: self._lanes)
    entries = property(lambda self: self._entries)

    def elaborate(self, platform):
        m = Module()
        beats = GELU_ENTRIES // self._entries
        m.submodules.lookup = lookup = GeluLookup(self._lanes, banks=2, entries=self._entries)

        # ---- table loads: fill the free bank -------------------------------------------
        full = Signal(2)                 # bank holds a table not yet used up by its batch
        load_bank = Signal()
        load_beat = Signal(range(beats))
        loaded = Signal()
        release = Signal()
        use_bank = Signal()
        m.d.comb += [
            self.t.ready.eq(~full.bit_select(load_bank, 1)),
            lookup.write.en.eq(self.t.valid & self.t.ready),
            lookup.write.bank.eq(load_bank),
            lookup.write.addr.eq(load_beat),
            lookup.write.data.eq(self.t.payload),
        ]
        with m.If(self.t.valid & self.t.ready):
            m.d.sync += load_beat.eq(Mux(load_beat == beats - 1, 0, load_beat + 1))
            with m.If(load_beat == beats - 1):
                m.d.comb += loaded.eq(1)
                m.d.sync += load_bank.eq(~load_bank)
        m.d.sync += full.eq((full | Mux(loaded, 1 << load_bank, 0))
                            & ~Mux(release, 1 << use_bank, 0))

        # ---- data: one registered read per lane (stall-all) ---------------------------
        en = ~self.o.valid | self.o.ready
        take = self.i.valid & self.i.ready
        m.d.comb += [
            self.i.ready.eq(en & full.bit_select(use_bank, 1)),
            lookup.read.en.eq(take),
            lookup.read.bank.eq(use_bank),
            lookup.read.code.eq(self.i.payload.data),
            self.o.payload.data.eq(lookup.read.value),
        ]
        with m.If(en):
            m.d.sync += [self.o.valid.eq(take), self.o.payload.last.eq(self.i.payload.last)]
        with m.If(take & self.i.payload.last):
            m.d.comb += release.eq(1)
            m.d.sync += use_bank.eq(~use_bank)
        return m


def exp_cycles(batches, entries=4):
    """Cycles from cycle 0 to the last ``o`` beat for batches of ``batches[n]`` beats.

    Both sources run at full rate from cycle 0 (``t`` with one table per batch),
    ``o`` is always ready. Table ``n`` goes into bank ``n % 2`` once batch ``n - 2``
    took its last beat (the cycle after); batch ``n`` starts the cycle after its
    table's last beat and after batch ``n - 1``; each output leaves one cycle after
    its beat.
    """
    table_beats = GELU_ENTRIES // entries
    t_end, i_end, last_take = -1, -1, []
    for n, beats in enumerate(batches):
        free = last_take[n - 2] + 1 if n >= 2 else 0
        t_end = max(t_end + 1, free) + table_beats - 1
        i_end = max(i_end + 1, t_end + 1) + beats - 1
        last_take.append(i_end)
    return i_end + GeluUnit.LATENCY + 1
