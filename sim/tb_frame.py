"""cocotb testbench of whole frames on the accelerator top (see :func:`sim.frame.run_verilator`).

The DRAM lives in the design (``sim/hdl/moevit_sim_ram.v``, loaded from a hex file
at time 0), so between register accesses no Python runs per cycle: the testbench
runs the host's driver sequence (:func:`moevit.driver.run_sequence`: arguments,
ap_start, wait for the interrupt, status registers) through
:class:`sim.cocotb_lite.LiteManager`, which runs only during its transactions, and
finally has the memory dump the output slots. ``TB_SPEC`` (JSON) lists
the runs; results go to its ``result`` file. A run's ``actions`` (the fault tests'):
``busy_start``, a second ap_start that many cycles after the run's; ``reset``, the
design's reset pulsed that many cycles after the start, which ends the run.
"""

import dataclasses
import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from moevit.driver import AP_START, DriverTimeout, execute_async, run_sequence
from rtl.control.registers import CONTROL
from sim.cocotb_lite import LiteManager


class _Host:
    """Register access for :func:`moevit.driver.execute_async`; ``wait`` times the frame
    and takes the run's ``actions`` (module docstring)."""

    def __init__(self, dut, master):
        self.dut, self.master, self.wall, self.actions = dut, master, 0.0, {}

    async def read(self, offset):
        return await self.master.read(offset)

    async def write(self, offset, word):
        await self.master.write(offset, word)

    async def wait(self, timeout):
        start = time.perf_counter()
        if "busy_start" in self.actions:
            await ClockCycles(self.dut.clk, self.actions["busy_start"])
            await self.master.write(CONTROL, AP_START)
        if "reset" in self.actions:
            await ClockCycles(self.dut.clk, self.actions["reset"])
            self.dut.rst.value = 1
            await ClockCycles(self.dut.clk, 2)
            self.dut.rst.value = 0
            await ClockCycles(self.dut.clk, 1)
            self.wall = time.perf_counter() - start
            return
        try:
            await with_timeout(RisingEdge(self.dut.interrupt), timeout * 10, "ns")
        except SimTimeoutError:
            raise DriverTimeout(f"no ap_done within {timeout} cycles") from None
        self.wall = time.perf_counter() - start


@cocotb.test()
async def frames(dut):
    spec = json.loads(os.environ["TB_SPEC"])
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    host = _Host(dut, LiteManager(dut, "s_axi_control__", dut.clk))
    results = []
    for run in spec["runs"]:
        host.actions = run.get("actions", {})
        try:
            status = await execute_async(run_sequence(run["arguments"], run["timeout"]), host)
        except DriverTimeout as exc:        # the host's error, not a failed simulation
            results.append({"timeout": str(exc)})
            break
        results.append({"status": dataclasses.asdict(status), "wall_s": host.wall})
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    with open(spec["result"], "w") as f:
        json.dump(results, f)
