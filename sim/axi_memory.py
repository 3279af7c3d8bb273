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
(the Amaranth simulator, small images). With ``backdoor=True`` the storage is the
Verilog module ``sim/hdl/moevit_sim_ram.v`` instead (:data:`RAM_SOURCE`), which
loads a hex file at time 0 and dumps a range while ``dump`` is high: whole frames
in Verilator, with images of any size and no per-word Python.
"""

from pathlib import Path

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from rtl.bus.axi import ADDR_BITS, axi4_signature

__all__ = ["AxiMemory", "DECERR", "RAM_SOURCE"]

#: The backdoor RAM's Verilog.
RAM_SOURCE = Path(__file__).resolve().parent / "hdl" / "moevit_sim_ram.v"

DECERR = 0b11
_NOW_BITS = 40


class _Port:
    """Address, data and enable signals of one storage port."""

    def __init__(self, addr_bits, data_bits, name):
        self.addr = Signal(addr_bits, name=f"{name}_addr")
        self.data = Signal(data_bits, name=f"{name}_data")
        self.en = Signal(name=f"{name}_en")


class AxiMemory(wiring.Component):
    """``axi.ports`` AXI4 subordinate ports onto one word memory (see the module docstring).

    Parameters
    ----------
    axi : rtl.config.AxiPorts
        Data width, ports and the latencies (``read_latency`` at least 2).
    depth : int
        Words of ``axi.data_bits``.
    init : sequence of int, optional
    backdoor : bool
        Use the Verilog RAM of :data:`RAM_SOURCE` (loaded from ``+image=<hex file>``).

    Members
    -------
    s0 .. s{ports-1} : In(rtl.bus.axi.axi4_signature(axi.data_bits))
    dump : In(1)
        Backdoor only: dump the plusarg range while high.
    """

    def __init__(self, axi, depth, init=(), backdoor=False):
        if axi.read_latency < 2 or axi.write_latency < 2:
            raise ValueError(f"the simulation memory needs axi.read_latency and "
                             f"axi.write_latency >= 2, not {axi.read_latency} and "
                             f"{axi.write_latency}")
        self._axi, self._depth, self._backdoor = axi, depth, backdoor
        self.storage = None if backdoor else memory.Memory(shape=axi.data_bits, depth=depth,
                                                           init=list(init))
        super().__init__({**{f"s{p}": In(axi4_signature(axi.data_bits))
                             for p in range(axi.ports)},
                          **({"dump": In(1)} if backdoor else {})})

    @property
    def storage_data(self):
        """The words (``ctx.get(storage_data[i])`` in the Amaranth simulator)."""
        return self.storage.data

    def elaborate(self, platform):
        m = Module()
        axi = self._axi
        shift = exact_log2(axi.data_bytes)
        ports = self._ports(m)
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
                         ar.w_data.eq(Cat(port.araddr, port.arlen,
                                         (now + axi.read_latency)[:_NOW_BITS]))]
            rd, wr = ports[p]
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
                         bq.w_data.eq(Cat((taken_at + axi.write_latency)[:_NOW_BITS],
                                         w_bad | outside))]
            with m.If(write):
                m.d.sync += [w_offset.eq(Mux(last, 0, w_offset + 1)),
                             w_bad.eq(~last & (w_bad | outside))]
            b_due = bq.r_data[:_NOW_BITS]
            m.d.comb += [port.bvalid.eq(bq.r_rdy & (now >= b_due)),
                         port.bresp.eq(Mux(bq.r_data[_NOW_BITS], DECERR, 0)),
                         bq.r_en.eq(port.bvalid & port.bready)]
        return m

    def _ports(self, m):
        """Per AXI port, a (read, write) pair onto the Amaranth memory or the backdoor RAM."""
        axi, depth = self._axi, self._depth
        if not self._backdoor:
            m.submodules.storage = self.storage
            return [(self.storage.read_port(), self.storage.write_port()) for _ in range(axi.ports)]
        aw = max(1, (depth - 1).bit_length())
        pairs = [(_Port(aw, axi.data_bits, f"ram_r{p}"), _Port(aw, axi.data_bits, f"ram_w{p}"))
                 for p in range(axi.ports)]
        m.submodules.ram = Instance(
            "moevit_sim_ram", p_WIDTH=axi.data_bits, p_DEPTH=depth, p_AW=aw, p_PORTS=axi.ports,
            i_clk=ClockSignal(), i_dump=self.dump,
            i_ren=Cat(r.en for r, _ in pairs), i_raddr=Cat(r.addr for r, _ in pairs),
            o_rdata=Cat(r.data for r, _ in pairs),
            i_wen=Cat(w.en for _, w in pairs), i_waddr=Cat(w.addr for _, w in pairs),
            i_wdata=Cat(w.data for _, w in pairs))
        return pairs

