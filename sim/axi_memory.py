"""A simulation DRAM behind AXI4 subordinate ports, with the schedule model's timing.

The fast path of whole-frame simulations: the memory is part of the simulated
design, so no Python runs per cycle. Every port answers exactly as
:mod:`moevit.schedule` assumes: ARREADY, AWREADY and WREADY are always high; the
first R beat of a burst comes ``read_latency`` cycles after its AR (and after the
previous burst's last beat), then one beat per cycle while RREADY is high; a
burst's B response comes ``write_latency`` cycles after its last W beat. An
address beyond the memory answers DECERR (on R or B), which is how the fault
tests reach the accelerator's bus-error path.

All ports share one storage of ``axi.data_bits``-wide words (the striped layout
puts each port's data in its own sub-region). ``init`` fills it at elaboration
(the Amaranth simulator); :func:`verilog_with_backdoor` gives Verilog that loads
and dumps it with ``$readmemh`` / ``$writememh`` instead (Verilator, large images).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from rtl.bus.axi import ADDR_BITS, axi4_signature

__all__ = ["AxiMemory", "DECERR"]

DECERR = 0b11
_NOW_BITS = 40


class AxiMemory(wiring.Component):
    """``axi.ports`` AXI4 subordinate ports onto one word memory (see the module docstring).

    Parameters
    ----------
    axi : rtl.config.AxiPorts
        Data width, ports and the latencies (``read_latency`` at least 2).
    depth : int
        Words of ``axi.data_bits``.
    init : sequence of int, optional

    Members
    -------
    s0 .. s{ports-1} : In(rtl.bus.axi.axi4_signature(axi.data_bits))
    """

    def __init__(self, axi, depth, init=()):
        if axi.read_latency < 2 or axi.write_latency < 2:
            raise ValueError(f"the simulation memory needs axi.read_latency and "
                             f"axi.write_latency >= 2, not {axi.read_latency} and "
                             f"{axi.write_latency}")
        self._axi, self._depth = axi, depth
        self.storage = memory.Memory(shape=axi.data_bits, depth=depth, init=list(init))
        super().__init__({f"s{p}": In(axi4_signature(axi.data_bits)) for p in range(axi.ports)})

    @property
    def storage_data(self):
        """The words (``ctx.get(storage_data[i])`` in the Amaranth simulator)."""
        return self.storage.data

    def elaborate(self, platform):
        m = Module()
        axi = self._axi
        shift = exact_log2(axi.data_bytes)
        m.submodules.storage = storage = self.storage
        now = Signal(_NOW_BITS)
        m.d.sync += now.eq(now + 1)
        burst = data.StructLayout({"addr": ADDR_BITS, "len": 8, "due": _NOW_BITS})
        for p in range(axi.ports):
            port = getattr(self, f"s{p}")
            # ---- reads: AR queue, then bursts one beat per cycle from their due time ----
            ar = fifo.SyncFIFO(width=burst.size, depth=axi.outstanding + 1)
            m.submodules[f"ar{p}"] = ar
            head = burst(ar.r_data)
            m.d.comb += [port.arready.eq(ar.w_rdy), ar.w_en.eq(port.arvalid),
                         ar.w_data.eq(Cat(port.araddr, port.arlen, now + axi.read_latency))]
            rd = storage.read_port()
            r_addr = Signal(ADDR_BITS - shift, name=f"r{p}_addr")
            r_left = Signal(9, name=f"r{p}_left")              # beats of the burst to issue
            r_bad = Signal(name=f"r{p}_bad")
            rvalid, rlast, rbad = (Signal(name=f"r{p}_{n}") for n in ("valid", "last", "bad"))
            free = ~rvalid | port.rready
            start = (r_left == 0) & ar.r_rdy & (now + 1 >= head.due) & free
            more = (r_left != 0) & free
            issue = Signal(name=f"r{p}_issue")
            address = Signal(ADDR_BITS - shift, name=f"r{p}_address")
            m.d.comb += [issue.eq(start | more),
                         address.eq(Mux(start, head.addr >> shift, r_addr)),
                         rd.addr.eq(address), rd.en.eq(issue), ar.r_en.eq(start)]
            out_of_range = address >= self._depth
            with m.If(start):
                m.d.sync += [r_addr.eq((head.addr >> shift) + 1), r_left.eq(head.len),
                             r_bad.eq(0)]
            with m.Elif(more):
                m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1)]
            with m.If(issue):
                m.d.sync += [rvalid.eq(1), rlast.eq(Mux(start, head.len == 0, r_left == 1)),
                             rbad.eq(out_of_range)]
            with m.Elif(port.rready):
                m.d.sync += rvalid.eq(0)
            m.d.comb += [port.rvalid.eq(rvalid), port.rlast.eq(rlast), port.rdata.eq(rd.data),
                         port.rresp.eq(Mux(rbad, DECERR, 0))]
            # ---- writes: AW and W queues, a writer one word per cycle, B after the latency ----
            aw = fifo.SyncFIFO(width=burst.size, depth=axi.outstanding + 1)
            wq = fifo.SyncFIFO(width=axi.data_bits + 1 + _NOW_BITS, depth=2 * axi.burst_beats)
            bq = fifo.SyncFIFO(width=_NOW_BITS + 1, depth=axi.outstanding + 1)
            m.submodules[f"aw{p}"], m.submodules[f"w{p}"], m.submodules[f"b{p}"] = aw, wq, bq
            m.d.comb += [port.awready.eq(aw.w_rdy), aw.w_en.eq(port.awvalid),
                         aw.w_data.eq(Cat(port.awaddr, port.awlen, now)),
                         port.wready.eq(wq.w_rdy), wq.w_en.eq(port.wvalid),
                         wq.w_data.eq(Cat(port.wdata, port.wlast, now))]
            wr = storage.write_port()
            w_head = burst(aw.r_data)
            w_offset = Signal(9, name=f"w{p}_offset")
            w_bad = Signal(name=f"w{p}_bad")
            w_word = Signal(ADDR_BITS - shift, name=f"w{p}_word")
            m.d.comb += w_word.eq((w_head.addr >> shift) + w_offset)
            outside = w_word >= self._depth
            write = aw.r_rdy & wq.r_rdy & bq.w_rdy
            last = wq.r_data[axi.data_bits]
            taken_at = wq.r_data[axi.data_bits + 1:]
            m.d.comb += [wr.addr.eq(w_word), wr.data.eq(wq.r_data[:axi.data_bits]),
                         wr.en.eq(write & ~outside), wq.r_en.eq(write),
                         aw.r_en.eq(write & last),
                         # A burst's B is due write_latency cycles after its last W beat was
                         # taken; it answers DECERR if any of its words was outside.
                         bq.w_en.eq(write & last),
                         bq.w_data.eq(Cat(taken_at + axi.write_latency, w_bad | outside))]
            with m.If(write):
                m.d.sync += [w_offset.eq(Mux(last, 0, w_offset + 1)),
                             w_bad.eq(~last & (w_bad | outside))]
            b_due = bq.r_data[:_NOW_BITS]
            m.d.comb += [port.bvalid.eq(bq.r_rdy & (now >= b_due)),
                         port.bresp.eq(Mux(bq.r_data[_NOW_BITS], DECERR, 0)),
                         bq.r_en.eq(port.bvalid & port.bready)]
        return m
