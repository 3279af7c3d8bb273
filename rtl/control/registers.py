"""The control registers: an AXI4-Lite subordinate with the ``ap_ctrl_hs`` map of XRT kernels.

XRT and PYNQ drive it with no custom driver (AMD UG1393 "Kernel Controls",
UG1399 "S_AXILITE Control Register Map")::

    0x00 control   bit 0 ap_start (R/W, cleared when the run starts), 1 ap_done (R,
                   clear on read), 2 ap_idle (R), 3 ap_ready (R, clear on read),
                   7 auto_restart (R/W: start again after every done); a start written
                   while a run is going is ignored and counted
    0x04 GIE       bit 0 global interrupt enable
    0x08 IER       bit 0 ap_done, bit 1 ap_ready
    0x0C ISR       bit 0 ap_done, bit 1 ap_ready (set by the events, toggled by writing 1)
    0x10 ..        kernel arguments (:data:`ARGUMENTS`), 64-bit addresses as two words
    0x40 ..        read-only status (:data:`STATUS`): error code, cycles of the last
                   run, starts ignored while busy, busy cycles per engine

``interrupt`` is ``GIE & (ISR & IER) != 0``. Writes take the AW and W beats in any
order (both are held until the other arrives), answer OKAY; a read of an unmapped
offset returns 0. One transaction at a time per direction.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..bus.axi import OKAY, lite_signature

__all__ = ["CONTROL", "GIE", "IER", "ISR", "ARGUMENTS", "STATUS", "ENGINES", "ERRORS",
           "arguments_layout", "argument_words", "ControlRegisters"]

CONTROL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
#: Kernel arguments: name -> (offset, bits).
ARGUMENTS = {
    "program": (0x10, 64),      # byte address of the program (header word first)
    "model": (0x18, 64),        # the MODEL base: the compiled image
    "input": (0x20, 64),        # the INPUT base of frame 0
    "output": (0x28, 64),       # the OUTPUT base of frame 0
    "task": (0x30, 4),          # selects the gate images
    "frames": (0x34, 16),       # frames to run; frame f reads input + f * input_bytes
}
#: Engines whose busy cycles are counted.
ENGINES = ("load", "compute", "store", "linear", "attention", "layernorm", "gating", "combine")
#: Read-only status: name -> offset.
STATUS = {"error": 0x40, "cycles": 0x44, "ignored_starts": 0x48,
          **{f"busy_{e}": 0x4C + 4 * n for n, e in enumerate(ENGINES)}}
#: Error codes of the ``error`` register.
ERRORS = {"none": 0, "opcode": 1, "read_response": 2, "write_response": 3, "watchdog": 4,
          "header": 5, "token": 6, "overlap": 7}

arguments_layout = data.StructLayout({name: bits for name, (_, bits) in ARGUMENTS.items()})


def argument_words(values):
    """The register writes of kernel arguments ``{name: value}``: ``(offset, 32-bit word)``
    pairs, low word first (what a host writes before ap_start)."""
    return [(offset + 4 * word, (values[name] >> (32 * word)) & 0xFFFFFFFF)
            for name in values for offset, bits in [ARGUMENTS[name]]
            for word in range(-(-bits // 32))]


class ControlRegisters(wiring.Component):
    """The register file (see the module docstring).

    Members
    -------
    s_axi : In(rtl.bus.axi.lite_signature())
    run : Out(1)
        Pulses when a run starts (ap_start taken while idle).
    busy : In(1)
        The core is running.
    finished : In(1)
        Pulses when the run ends (all frames, or an error).
    arguments : Out(arguments_layout)
    error : In(8)
        The last run's error code (:data:`ERRORS`).
    cycles : In(32)
        Cycles of the last run (``run`` to ``finished``).
    busy_cycles : In(data.ArrayLayout(32, len(ENGINES)))
    interrupt : Out(1)
    """

    def __init__(self):
        super().__init__({
            "s_axi": In(lite_signature()),
            "run": Out(1), "busy": In(1), "finished": In(1),
            "arguments": Out(arguments_layout),
            "error": In(8), "cycles": In(32),
            "busy_cycles": In(data.ArrayLayout(32, len(ENGINES))),
            "interrupt": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axi
        ap_start, ap_done, ap_ready, auto_restart = Signal(), Signal(), Signal(), Signal()
        gie, ier, isr = Signal(), Signal(2), Signal(2)
        ignored = Signal(32)
        args = Signal(arguments_layout)
        m.d.comb += self.arguments.eq(args)

        # ---- run control: ap_start is taken while idle -----------------------------------
        idle = ~self.busy
        take = ap_start & idle
        m.d.comb += self.run.eq(take)
        done_event = self.finished
        ready_event = take

        # ---- writes: hold AW and W until both are in, then answer B ---------------------
        aw_addr, aw_full = Signal(12), Signal()
        w_data, w_strb, w_full = Signal(32), Signal(4), Signal()
        b_valid = Signal()
        m.d.comb += [bus.awready.eq(~aw_full & ~b_valid), bus.wready.eq(~w_full & ~b_valid),
                     bus.bvalid.eq(b_valid), bus.bresp.eq(OKAY)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_addr.eq(bus.awaddr), aw_full.eq(1)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_data.eq(bus.wdata), w_strb.eq(bus.wstrb), w_full.eq(1)]
        write = aw_full & w_full
        with m.If(write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += b_valid.eq(0)
        mask = Cat(*(w_strb[n].replicate(8) for n in range(4)))

        def merged(old):
            return (old & ~mask) | (w_data & mask)

        start_write = write & (aw_addr == CONTROL) & w_strb[0] & w_data[0]
        with m.If(write & (aw_addr == CONTROL) & w_strb[0]):
            m.d.sync += auto_restart.eq(w_data[7])
        with m.If(write & (aw_addr == GIE) & w_strb[0]):
            m.d.sync += gie.eq(w_data[0])
        with m.If(write & (aw_addr == IER) & w_strb[0]):
            m.d.sync += ier.eq(w_data[:2])
        for name, (offset, bits) in ARGUMENTS.items():
            field = args[name]
            for word in range(-(-bits // 32)):
                lo, hi = 32 * word, min(bits, 32 * word + 32)
                with m.If(write & (aw_addr == offset + 4 * word)):
                    m.d.sync += field[lo:hi].eq(merged(field[lo:hi])[:hi - lo])

        # ---- reads: one at a time, registered -------------------------------------------
        r_valid, r_data = Signal(), Signal(32)
        m.d.comb += [bus.arready.eq(~r_valid), bus.rvalid.eq(r_valid), bus.rdata.eq(r_data),
                     bus.rresp.eq(OKAY)]
        read = bus.arvalid & bus.arready
        value = Signal(32)
        with m.Switch(bus.araddr):
            with m.Case(CONTROL):
                m.d.comb += value.eq(Cat(ap_start, ap_done, idle, ap_ready, 0, 0, 0,
                                         auto_restart))
            with m.Case(GIE):
                m.d.comb += value.eq(gie)
            with m.Case(IER):
                m.d.comb += value.eq(ier)
            with m.Case(ISR):
                m.d.comb += value.eq(isr)
            for name, (offset, bits) in ARGUMENTS.items():
                for word in range(-(-bits // 32)):
                    with m.Case(offset + 4 * word):
                        m.d.comb += value.eq(args[name][32 * word:min(bits, 32 * word + 32)])
            with m.Case(STATUS["error"]):
                m.d.comb += value.eq(self.error)
            with m.Case(STATUS["cycles"]):
                m.d.comb += value.eq(self.cycles)
            with m.Case(STATUS["ignored_starts"]):
                m.d.comb += value.eq(ignored)
            for n, engine in enumerate(ENGINES):
                with m.Case(STATUS[f"busy_{engine}"]):
                    m.d.comb += value.eq(self.busy_cycles[n])
        with m.If(read):
            m.d.sync += [r_valid.eq(1), r_data.eq(value)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += r_valid.eq(0)
        read_control = read & (bus.araddr == CONTROL)

        # ---- ap_start, ap_done, ap_ready and the interrupt status ---------------------------
        # A start written while a run is going is ignored and counted.
        with m.If(start_write & self.busy):
            m.d.sync += ignored.eq(ignored + 1)
        with m.If(take):
            m.d.sync += ap_start.eq(0)
        with m.If((start_write & ~self.busy) | (done_event & auto_restart)):
            m.d.sync += ap_start.eq(1)
        # Clear on read; an event in the same cycle wins (it is not lost).
        m.d.sync += [ap_done.eq(done_event | (ap_done & ~read_control)),
                     ap_ready.eq(ready_event | (ap_ready & ~read_control))]
        toggle = Mux(write & (aw_addr == ISR) & w_strb[0], w_data[:2], 0)
        events = Cat(done_event & ier[0], ready_event & ier[1])
        m.d.sync += isr.eq((isr ^ toggle) | events)
        m.d.comb += self.interrupt.eq(gie & (isr != 0))
        return m
