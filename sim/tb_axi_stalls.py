"""cocotb testbench: the accelerator top against cocotbext-axi's AXI RAM with random stalls.

The protocol-level test of the bus ports: every channel of every master port is
paused at random (cocotbext-axi pause generators, seeded), the control port is
driven by cocotbext-axi's AxiLiteMaster, and the frame must still come out bit for
bit. Each port has its own AxiRam holding the whole image (port ``p`` only touches
its sub-regions of the striped transfers). ``TB_SPEC`` (JSON): the image file, the
runs, the result file.
"""

import dataclasses
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from moevit.driver import execute_async, run_sequence


def _pauses(rng, share):
    while True:
        yield rng.random() < share


class _Host:
    """Register access for :func:`moevit.driver.execute_async` through cocotbext-axi."""

    def __init__(self, dut, master):
        self.dut, self.master = dut, master

    async def read(self, offset):
        return await self.master.read_dword(offset)

    async def write(self, offset, word):
        await self.master.write_dword(offset, word)

    async def wait(self, timeout):
        await with_timeout(RisingEdge(self.dut.interrupt), timeout * 10, "ns")


@cocotb.test()
async def stalled_frames(dut):
    spec = json.loads(os.environ["TB_SPEC"])
    image = open(spec["image"], "rb").read()
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    rams = []
    rng = random.Random(spec["seed"])
    for p in range(spec["ports"]):
        ram = AxiRam(AxiBus.from_prefix(dut, f"m_axi{p}_"), dut.clk, dut.rst, size=spec["size"])
        ram.write(0, image)
        ram.write_if.log.setLevel("WARNING")
        ram.read_if.log.setLevel("WARNING")
        for channel in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                        ram.read_if.ar_channel, ram.read_if.r_channel):
            channel.set_pause_generator(_pauses(rng, spec["pause"]))
        rams.append(ram)
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control_"), dut.clk, dut.rst)
    master.write_if.log.setLevel("WARNING")
    master.read_if.log.setLevel("WARNING")
    host = _Host(dut, master)
    results = []
    for run in spec["runs"]:
        status = await execute_async(run_sequence(run["arguments"], run["timeout"]), host)
        out = run["arguments"]["output"]
        # Port p wrote sub-region p of every transfer into its own RAM.
        parts = [ram.read(out, spec["output_bytes"]).hex() for ram in rams]
        results.append({"status": dataclasses.asdict(status), "outputs": parts})
    with open(spec["result"], "w") as f:
        json.dump(results, f)
