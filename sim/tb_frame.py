"""cocotb testbench of whole frames on the accelerator top (see :func:`sim.frame.run_verilator`).

The DRAM lives in the design (``sim/hdl/moevit_sim_ram.v``, loaded from a hex file
at time 0), so between register accesses no Python runs per cycle: the testbench
writes each run's arguments (:class:`sim.cocotb_lite.LiteManager`, which runs only
during its transactions), sets ap_start, waits for the interrupt, reads the status
registers, and finally has the memory dump the output slots. ``TB_SPEC`` (JSON) lists
the runs; results go to its ``result`` file.
"""

import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from rtl.control.registers import CONTROL, GIE, IER, ISR, STATUS, argument_words
from sim.cocotb_lite import LiteManager


@cocotb.test()
async def frames(dut):
    spec = json.loads(os.environ["TB_SPEC"])
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    master = LiteManager(dut, "s_axi_control__", dut.clk)
    await master.write(GIE, 1)
    await master.write(IER, 1)
    results = []
    for run in spec["runs"]:
        for offset, word in argument_words(run["arguments"]):
            await master.write(offset, word)
        start = time.perf_counter()
        await master.write(CONTROL, 1)
        await with_timeout(RisingEdge(dut.interrupt), run["timeout"] * 10, "ns")
        wall = time.perf_counter() - start
        status = {name: await master.read(offset) for name, offset in STATUS.items()}
        await master.write(ISR, 1)                      # clear the interrupt
        results.append({"status": status, "wall_s": wall})
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    with open(spec["result"], "w") as f:
        json.dump(results, f)
