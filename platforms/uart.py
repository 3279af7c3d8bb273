"""A minimal 8N1 UART transmitter (Amaranth 0.5 has no UART in its standard library)."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.params import check_int, validating

__all__ = ["UartTx"]


class UartTx(wiring.Component):
    """Send bytes as 8N1 frames (start bit, 8 data bits LSB first, stop bit).

    Parameters
    ----------
    divisor : int, 1..2**24
        Clock cycles per bit (``clk_frequency // baud``).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes; one is taken when the previous frame's stop bit ends.
    tx : Out(1)
        The line, idle high.

    Each byte takes exactly ``10 * divisor`` cycles.
    """

    def __init__(self, divisor):
        with validating(self):
            check_int("divisor", divisor, 1, 1 << 24)
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=0x3FF)      # stop, 8 data, start: shifted out LSB first
        bits = Signal(range(11))
        timer = Signal(range(self._divisor))
        m.d.comb += [self.tx.eq(shift[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                         timer.eq(self._divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1),
                             timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
