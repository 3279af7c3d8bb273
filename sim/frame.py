"""Whole frames through the RTL top: the accelerator and a simulation DRAM in one design.

:class:`FrameHarness` is :class:`rtl.top.accelerator.Accelerator` with an
:class:`sim.axi_memory.AxiMemory` on its AXI ports, holding a compiled DRAM image
(:class:`moevit.compiler.CompiledModel`); only the control port is left for the
testbench. :func:`run_pysim` drives it in the Amaranth simulator the way a host
driver does (arguments, ap_start, wait for ap_done, read the status) and returns
the output tensor, the cycle count and the error code.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from moevit.images import bytes_to_beats
from rtl.bus.axi import lite_signature
from rtl.control.registers import ARGUMENTS, CONTROL, GIE, IER, STATUS
from rtl.top.accelerator import Accelerator

from .axi_lite import lite_read, lite_write
from .axi_memory import AxiMemory

__all__ = ["FrameHarness", "FrameResult", "arguments", "run_pysim"]


class FrameHarness(wiring.Component):
    """The top and its DRAM (see the module docstring).

    Members
    -------
    s_axi_control : In(lite_signature())
    interrupt : Out(1)
    """

    def __init__(self, config, image):
        self.config = config
        axi = config.axi
        words = bytes_to_beats(bytes(image.data), axi.data_bits)
        self.top = Accelerator(config)
        self.memory = AxiMemory(axi, len(words), words)
        super().__init__({"s_axi_control": In(lite_signature()), "interrupt": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top, m.submodules.memory = self.top, self.memory
        wiring.connect(m, wiring.flipped(self.s_axi_control), self.top.s_axi_control)
        m.d.comb += self.interrupt.eq(self.top.interrupt)
        for p in range(self.config.axi.ports):
            wiring.connect(m, getattr(self.top, f"m_axi{p}"), getattr(self.memory, f"s{p}"))
        return m


def arguments(image, task, frames=1):
    """The kernel arguments of a compiled image at address 0: ``{name: value}``."""
    return {"program": image.region("program").offset, "model": 0,
            "input": image.region("input").offset, "output": image.region("output").offset,
            "task": task, "frames": frames}


@dataclass
class FrameResult:
    """What the host reads back after a run."""
    output: np.ndarray
    cycles: int
    error: int
    busy: dict


def run_pysim(compiled, pixels, task, timeout=2_000_000):
    """One frame of ``compiled`` on ``pixels`` for ``task`` in the Amaranth simulator."""
    image = compiled.with_input(pixels)
    dut = FrameHarness(compiled.config, image)
    result = {}

    async def bench(ctx):
        bus = dut.s_axi_control
        for name, value in arguments(image, task).items():
            offset, bits = ARGUMENTS[name]
            for word in range(-(-bits // 32)):
                await lite_write(ctx, bus, offset + 4 * word, (value >> (32 * word)) & 0xFFFFFFFF)
        await lite_write(ctx, bus, GIE, 1)
        await lite_write(ctx, bus, IER, 1)
        await lite_write(ctx, bus, CONTROL, 1)
        for _ in range(timeout // 1000):
            await ctx.tick().repeat(1000)
            if ctx.get(dut.interrupt):
                break
        else:
            raise AssertionError(f"no ap_done within {timeout} cycles")
        result["cycles"] = await lite_read(ctx, bus, STATUS["cycles"])
        result["error"] = await lite_read(ctx, bus, STATUS["error"])
        result["busy"] = {name[5:]: await lite_read(ctx, bus, offset)
                          for name, offset in STATUS.items() if name.startswith("busy_")}
        storage = dut.memory.storage_data
        region = image.region("output")
        first = region.offset // compiled.config.axi.data_bytes
        count = region.size // compiled.config.axi.data_bytes
        raw = b"".join(ctx.get(storage[first + n]).to_bytes(compiled.config.axi.data_bytes,
                                                             "little") for n in range(count))
        out = image.copy()
        out.write(region.offset, raw)
        result["output"] = compiled.read_output(out)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return FrameResult(result["output"], result["cycles"], result["error"], result["busy"])
