"""A minimal AXI4-Lite manager for cocotb that runs only during its transactions.

cocotbext-axi's AxiLiteMaster keeps channel coroutines polling every clock edge,
which would put Python in every cycle of a whole-frame simulation. These two
coroutines drive one transaction each and return, so that while a frame runs the
simulator runs alone (protocol tests with random stalls use cocotbext-axi).
Signals are named ``<prefix>awaddr`` etc. (``prefix = "s_axi_control__"``).
"""

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["LiteManager"]


class LiteManager:
    """``await write(offset, value)`` and ``await read(offset)`` on an AXI4-Lite subordinate."""

    def __init__(self, dut, prefix, clock):
        self._dut, self._prefix, self._clock = dut, prefix, clock
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
            self._sig(name).value = 0

    def _sig(self, name):
        return getattr(self._dut, self._prefix + name)

    async def _until(self, name):
        while True:
            await ReadOnly()
            if self._sig(name).value:
                break
            await RisingEdge(self._clock)
        await RisingEdge(self._clock)

    async def write(self, offset, value):
        self._sig("awaddr").value = offset
        self._sig("wdata").value = value
        self._sig("wstrb").value = 0xF
        self._sig("awvalid").value = 1
        self._sig("wvalid").value = 1
        aw = w = False
        while not (aw and w):
            await ReadOnly()
            aw_now = not aw and bool(self._sig("awready").value)
            w_now = not w and bool(self._sig("wready").value)
            await RisingEdge(self._clock)
            if aw_now:
                aw = True
                self._sig("awvalid").value = 0
            if w_now:
                w = True
                self._sig("wvalid").value = 0
        self._sig("bready").value = 1
        await self._until("bvalid")
        self._sig("bready").value = 0
        return int(self._sig("bresp").value)

    async def read(self, offset):
        self._sig("araddr").value = offset
        self._sig("arvalid").value = 1
        await self._until("arready")
        self._sig("arvalid").value = 0
        self._sig("rready").value = 1
        while True:
            await ReadOnly()
            if self._sig("rvalid").value:
                value = int(self._sig("rdata").value)
                break
            await RisingEdge(self._clock)
        await RisingEdge(self._clock)
        self._sig("rready").value = 0
        return value
