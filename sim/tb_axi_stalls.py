"""cocotb testbench: the accelerator top against cocotbext-axi's AXI RAM with random stalls.

The protocol-level test of the bus ports: every channel of every master port is
paused at random (cocotbext-axi pause generators, seeded), the control port is
driven by cocotbext-axi's AxiLiteMaster, and the frame must still come out bit for
bit. Each port has its own AxiRam holding the whole image (port ``p`` only touches
its sub-regions of the striped transfers). ``TB_SPEC`` (JSON): the image file, the
runs, the result file.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from rtl.control.registers import CONTROL, GIE, IER, ISR, STATUS, argument_words


def _pauses(rng, share):
    while True:
        yield rng.random() < share


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
    await master.write_dword(GIE, 1)
    await master.write_dword(IER, 1)
    results = []
    for run in spec["runs"]:
        for offset, word in argument_words(run["arguments"]):
            await master.write_dword(offset, word)
        await master.write_dword(CONTROL, 1)
        await with_timeout(RisingEdge(dut.interrupt), run["timeout"] * 10, "ns")
        status = {name: await master.read_dword(offset) for name, offset in STATUS.items()}
        await master.write_dword(ISR, 1)
        out = run["arguments"]["output"]
        # Port p wrote sub-region p of every transfer into its own RAM.
        parts = [ram.read(out, spec["output_bytes"]).hex() for ram in rams]
        results.append({"status": status, "outputs": parts})
    with open(spec["result"], "w") as f:
        json.dump(results, f)
