"""DMA engines: striped AXI4 reads and writes of whole load-path words.

A transfer of ``beats`` load-path words at byte ``address`` moves, on every port
``p``, ``beats`` bus words of the sub-region at ``address + p * sub_region(beats)``
(:meth:`rtl.config.AxiPorts.sub_region`, :func:`moevit.images.stripe`): port ``p``
carries bus word ``p`` of each load-path word. Bursts are INCR, at most
``axi.burst_beats`` long and never cross 4 KB; since every sub-region starts on a
4 KB multiple (several ports), the ports split alike and run in step.

::

    cmd {address, beats} --> per port: burst splitter --AR--> | AXI | --R--> FIFO --+
                                                                                      +--> o
                                         (all ports' FIFOs non-empty: one load-path word)

    cmd {address, beats}, i (words) --> per port: AW (burst splitter) and W (lane p) --> | AXI |
                                        B responses counted; done with the last B

**Timing** (the rules of :mod:`moevit.schedule`): the command is taken in cycle
``s``. Reader: the first AR goes out in ``s + 1``, then one per cycle while fewer than
``axi.outstanding`` bursts await their last beat (a burst's slot frees the cycle after
its last R beat); R beats go into a FIFO per port, and a load-path word leaves the
cycle after its last part arrived. :attr:`DmaReader.done` pulses in the cycle the
last word leaves. Writer: AW for burst ``i`` in the cycle after burst ``i - 1``'s AW
(the first in ``s + 1``), while fewer than ``axi.outstanding`` bursts await their B; W
beats as words arrive on ``i`` once their burst's AW has gone; :attr:`DmaWriter.done`
pulses with the last B. Backpressure: any AXI channel may stall (RREADY follows FIFO
space, so no beat is lost); a response other than OKAY sets ``error``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..bus.axi import ADDR_BITS, INCR, OKAY, read_signature, write_signature
from ..compute.constmul import times
from ..config import BOUNDARY

__all__ = ["BEATS_BITS", "command_layout", "sub_region", "DmaReader", "DmaWriter"]

#: Width of a transfer's word count (the LOAD_MATRIX ``beats`` field).
BEATS_BITS = 24

command_layout = data.StructLayout({"address": ADDR_BITS, "beats": BEATS_BITS})


def _port_members(axi, signature):
    return {f"m{p}": Out(signature(axi.data_bits)) for p in range(axi.ports)}


def sub_region(m, axi, beats, name):
    """A signal (combinational, added to ``m``): bytes of one port's sub-region of a
    transfer of ``beats`` load-path words (at most :data:`BEATS_BITS` bits), rounded up to
    a 4 KB multiple when there are several ports (:meth:`rtl.config.AxiPorts.sub_region`)."""
    shift = exact_log2(axi.data_bytes)
    # Rounding up to the 4 KB boundary adds at most one bit (4 KB < 2**(BEATS_BITS + shift)).
    width = BEATS_BITS + shift + (axi.ports > 1)
    size = Signal(width, name=name)
    if axi.ports == 1:
        m.d.comb += size.eq(beats << shift)
    else:
        m.d.comb += size.eq(((beats << shift) + BOUNDARY - 1) & ~Const(BOUNDARY - 1, width))
    return size


class _Splitter:
    """Burst splitting of one port: next burst length from the address and beats left."""

    def __init__(self, m, axi, name):
        self.addr = Signal(ADDR_BITS, name=f"{name}_addr")
        self.left = Signal(BEATS_BITS, name=f"{name}_left")
        room = Signal(range(BOUNDARY // axi.data_bytes + 1), name=f"{name}_room")
        shift = exact_log2(axi.data_bytes)
        m.d.comb += room.eq((BOUNDARY - self.addr[:ceil_log2(BOUNDARY)]) >> shift)
        self.length = Signal(range(axi.burst_beats + 1), name=f"{name}_length")
        cap = Mux(room < axi.burst_beats, room, axi.burst_beats)
        m.d.comb += self.length.eq(Mux(self.left < cap, self.left, cap))
        self.shift = shift

    def advance(self, m):
        m.d.sync += [self.addr.eq(self.addr + (self.length << self.shift)),
                     self.left.eq(self.left - self.length)]


class DmaReader(wiring.Component):
    """Striped AXI4 reads (see the module docstring).

    Parameters
    ----------
    axi : rtl.config.AxiPorts

    Members
    -------
    cmd : In(stream.Signature(command_layout))
        One transfer at a time; taken when the previous one is done.
    o : Out(stream.Signature(axi.path_bits))
        The transfer's load-path words, bus word ``p`` from port ``p``.
    m0 .. m{ports-1} : Out(rtl.bus.axi.read_signature(axi.data_bits))
    done : Out(1)
        Pulses in the cycle the transfer's last word leaves on ``o``.
    error : Out(1)
        An R response other than OKAY came in this transfer (from its cycle on); cleared by
        the next command.
    """

    def __init__(self, axi):
        self._axi = axi
        super().__init__({"cmd": In(stream.Signature(command_layout)),
                          "o": Out(stream.Signature(axi.path_bits)),
                          "done": Out(1), "error": Out(1),
                          **_port_members(axi, read_signature)})

    def elaborate(self, platform):
        m = Module()
        axi = self._axi
        active = Signal()
        words_left = Signal(BEATS_BITS)
        sub = sub_region(m, axi, self.cmd.payload.beats, "sub_region")
        take = self.cmd.valid & self.cmd.ready
        m.d.comb += self.cmd.ready.eq(~active)
        fifos, bad = [], []
        for p in range(axi.ports):
            port = getattr(self, f"m{p}")
            split = _Splitter(m, axi, f"port{p}")
            inflight = Signal(range(axi.outstanding + 1), name=f"port{p}_inflight")
            buf = fifo.SyncFIFO(width=axi.data_bits, depth=max(2, axi.burst_beats))
            m.submodules[f"fifo{p}"] = buf
            fifos.append(buf)
            m.d.comb += [
                port.araddr.eq(split.addr), port.arlen.eq(split.length - 1),
                port.arsize.eq(split.shift), port.arburst.eq(INCR),
                port.arvalid.eq(active & (split.left != 0) & (inflight < axi.outstanding)),
                port.rready.eq(buf.w_rdy),
                buf.w_data.eq(port.rdata), buf.w_en.eq(port.rvalid),
            ]
            issued = port.arvalid & port.arready
            finished = port.rvalid & port.rready & port.rlast
            m.d.sync += inflight.eq(inflight + issued - finished)
            with m.If(issued):
                split.advance(m)
            with m.If(take):
                m.d.sync += [split.addr.eq(self.cmd.payload.address + times(sub, p)),
                             split.left.eq(self.cmd.payload.beats)]
            bad.append(port.rvalid & port.rready & (port.rresp != OKAY))
        sticky = Signal()
        m.d.sync += sticky.eq((sticky | Cat(bad).any()) & ~take)
        m.d.comb += self.error.eq(sticky | Cat(bad).any())
        ready = Signal()
        m.d.comb += ready.eq(Cat(f.r_rdy for f in fifos).all())
        m.d.comb += [self.o.valid.eq(active & ready),
                     self.o.payload.eq(Cat(f.r_data for f in fifos))]
        out = self.o.valid & self.o.ready
        for f in fifos:
            m.d.comb += f.r_en.eq(out)
        with m.If(out):
            m.d.sync += words_left.eq(words_left - 1)
            with m.If(words_left == 1):
                m.d.comb += self.done.eq(1)
                m.d.sync += active.eq(0)
        with m.If(take):
            m.d.sync += [active.eq(self.cmd.payload.beats != 0),
                         words_left.eq(self.cmd.payload.beats)]
        return m


class DmaWriter(wiring.Component):
    """Striped AXI4 writes (see the module docstring).

    Members
    -------
    cmd : In(stream.Signature(command_layout))
    i : In(stream.Signature(axi.path_bits))
        The transfer's words; bus word ``p`` goes to port ``p``.
    m0 .. m{ports-1} : Out(rtl.bus.axi.write_signature(axi.data_bits))
    done : Out(1)
        Pulses in the cycle of the transfer's last B response.
    error : Out(1)
        A B response other than OKAY came in this transfer (from its cycle on); cleared by
        the next command.
    """

    def __init__(self, axi):
        self._axi = axi
        super().__init__({"cmd": In(stream.Signature(command_layout)),
                          "i": In(stream.Signature(axi.path_bits)),
                          "done": Out(1), "error": Out(1),
                          **_port_members(axi, write_signature)})

    def elaborate(self, platform):
        m = Module()
        axi = self._axi
        active = Signal()
        sub = sub_region(m, axi, self.cmd.payload.beats, "sub_region")
        take = self.cmd.valid & self.cmd.ready
        m.d.comb += self.cmd.ready.eq(~active)
        lasts, finals, dones, bad = [], [], [], []
        consume = Signal()
        for p in range(axi.ports):
            port = getattr(self, f"m{p}")
            split = _Splitter(m, axi, f"port{p}")
            inflight = Signal(range(axi.outstanding + 1), name=f"port{p}_inflight")
            # Lengths of bursts whose AW has gone and whose W beats have not all gone.
            lengths = fifo.SyncFIFO(width=9, depth=axi.outstanding)
            m.submodules[f"lengths{p}"] = lengths
            w_count = Signal(9, name=f"port{p}_w_count")
            # This port already took the current word (the others have not yet).
            sent = Signal(name=f"port{p}_sent")
            m.d.comb += [
                port.awaddr.eq(split.addr), port.awlen.eq(split.length - 1),
                port.awsize.eq(split.shift), port.awburst.eq(INCR),
                port.awvalid.eq(active & (split.left != 0) & (inflight < axi.outstanding)
                                & lengths.w_rdy),
                lengths.w_data.eq(split.length), lengths.w_en.eq(port.awvalid & port.awready),
                port.wdata.eq(self.i.payload[p * axi.data_bits:(p + 1) * axi.data_bits]),
                port.wstrb.eq(-1),
                port.wlast.eq(w_count + 1 == lengths.r_data),
                port.wvalid.eq(active & self.i.valid & lengths.r_rdy & ~sent),
                port.bready.eq(1),
            ]
            issued = port.awvalid & port.awready
            responded = port.bvalid & port.bready
            beat = port.wvalid & port.wready
            m.d.sync += inflight.eq(inflight + issued - responded)
            with m.If(issued):
                split.advance(m)
            with m.If(take):
                m.d.sync += [split.addr.eq(self.cmd.payload.address + times(sub, p)),
                             split.left.eq(self.cmd.payload.beats)]
            with m.If(beat):
                m.d.sync += w_count.eq(Mux(port.wlast, 0, w_count + 1))
            m.d.comb += lengths.r_en.eq(beat & port.wlast)
            m.d.sync += sent.eq(Mux(consume, 0, sent | beat))
            bad.append(responded & (port.bresp != OKAY))
            dones.append(sent | beat)
            lasts.append(responded)
            # The port is finished once every burst was addressed, written and answered.
            finals.append((split.left == 0) & ~lengths.r_rdy
                          & ((inflight == 0) | ((inflight == 1) & responded)))
        m.d.comb += [consume.eq(self.i.valid & Cat(dones).all()), self.i.ready.eq(consume)]
        sticky = Signal()
        m.d.sync += sticky.eq((sticky | Cat(bad).any()) & ~take)
        m.d.comb += self.error.eq(sticky | Cat(bad).any())
        # Every port's writes are in step; done pulses when the last port's last B arrives.
        finishing = Cat(lasts).any() & Cat(finals).all()
        with m.If(active & finishing):
            m.d.comb += self.done.eq(1)
            m.d.sync += active.eq(0)
        with m.If(take):
            m.d.sync += active.eq(self.cmd.payload.beats != 0)
        return m
