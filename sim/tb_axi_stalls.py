"""cocotb testbench: the accelerator top against cocotbext-axi's AXI RAM with random stalls.

The protocol-level test of the bus ports: every channel of every master port is
paused at random (cocotbext-axi pause generators, seeded), the control port is
driven by cocotbext-axi's AxiLiteMaster, and the frame must still come out bit for
bit. Each port has its own AxiRam holding the whole image (port ``p`` only touches
its sub-regions of the striped transfers). ``TB_SPEC`` (JSON): the image file, the
runs, the result file. A run may carry a ``fault`` (:func:`sim.frame.run_with_stalls`):
a stall of one channel of one port for ``cycles`` cycles from cycle ``after`` of the run,
or an SLVERR answer to the R beat (B response of the burst holding the write beat)
number ``after`` of one port.
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


class _Faults:
    """The injected faults of the current run: a long stall of one channel and an error
    response on R or B. ``clock`` counts the cycles since the run's start."""

    def __init__(self):
        self.clock = 0
        self.fault = None

    def start(self, fault):
        self.clock, self.fault = 0, fault

    def stalled(self, port, channel):
        f = self.fault
        return (f is not None and f["kind"] == "stall" and f["channel"] == channel
                and f["port"] == port and f["after"] <= self.clock < f["after"] + f["cycles"])

    def fails(self, port, channel):
        """Whether this R beat (B response) is the one to answer SLVERR."""
        f = self.fault
        if f is None or f["kind"] != "slverr" or f["channel"] != channel or f["port"] != port:
            return False
        f["after"] -= 1
        return f["after"] == -1


def _pauses(rng, share, faults, port, channel):
    while True:
        if port == 0 and channel == "r":
            faults.clock += 1                 # one generator advances the run's clock
        yield faults.stalled(port, channel) or rng.random() < share


def _failing(operation, faults, port, channel):
    """The RAM's read (write) of one beat, raising (cocotbext-axi answers SLVERR) once."""
    async def run(address, data):
        if faults.fails(port, channel):
            raise OSError(f"injected SLVERR on port {port} channel {channel}")
        return await operation(address, data)
    return run


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
    faults = _Faults()
    for p in range(spec["ports"]):
        ram = AxiRam(AxiBus.from_prefix(dut, f"m_axi{p}_"), dut.clk, dut.rst, size=spec["size"])
        ram.write(0, image)
        ram.write_if.log.setLevel("ERROR")
        ram.read_if.log.setLevel("ERROR")
        for name, channel in [("aw", ram.write_if.aw_channel), ("w", ram.write_if.w_channel),
                              ("b", ram.write_if.b_channel), ("ar", ram.read_if.ar_channel),
                              ("r", ram.read_if.r_channel)]:
            channel.set_pause_generator(_pauses(rng, spec["pause"], faults, p, name))
        ram.read_if._read = _failing(ram.read_if._read, faults, p, "r")
        ram.write_if._write = _failing(ram.write_if._write, faults, p, "b")
        rams.append(ram)
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control_"), dut.clk, dut.rst)
    master.write_if.log.setLevel("WARNING")
    master.read_if.log.setLevel("WARNING")
    host = _Host(dut, master)
    results = []
    for run in spec["runs"]:
        faults.start(run.get("fault"))
        status = await execute_async(run_sequence(run["arguments"], run["timeout"]), host)
        out = run["arguments"]["output"]
        # Port p wrote sub-region p of every transfer into its own RAM.
        parts = [ram.read(out, spec["output_bytes"]).hex() for ram in rams]
        results.append({"status": dataclasses.asdict(status), "outputs": parts})
    with open(spec["result"], "w") as f:
        json.dump(results, f)
