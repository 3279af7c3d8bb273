"""cocotb testbench for the Verilog of the board self-test core (platforms.selftest.SelfTest).

``TB_SEED`` picks the vectors (``make_vectors(seed=...)``); ``TB_CORRUPT`` >= 0 names
the expected word that was corrupted in the ROM, so the run must FAIL. Two runs
back to back; both must report the same verdict, and a cycle count equal to
``rtl.compute.systolic.exp_cycles`` of the vectors' shape (:attr:`Vectors.cycles`).
"""

import os

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, with_timeout

from platforms.selftest import make_vectors
from sim.cocotb_stream import start_clock_and_reset

VECTORS = make_vectors(seed=int(os.environ["TB_SEED"]))
CORRUPT = int(os.environ["TB_CORRUPT"])


@cocotb.test()
async def selftest_verdict(dut):
    await start_clock_and_reset(dut)
    for run in range(2):
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await ReadOnly()
        assert dut.busy.value == 1 and dut.done.value == 0, f"run {run} did not start"
        await with_timeout(RisingEdge(dut.done), 10 * (4 * VECTORS.cycles + 100), "ns")
        await ReadOnly()
        assert dut.busy.value == 0
        assert int(dut.passed.value) == int(CORRUPT < 0), f"run {run}: passed={dut.passed.value}"
        assert int(dut.cycles.value) == VECTORS.cycles, \
            f"run {run}: {int(dut.cycles.value)} cycles, model {VECTORS.cycles}"
        await RisingEdge(dut.clk)
