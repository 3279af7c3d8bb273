"""cocotb testbench for the emitted Verilog of the board self-test core (platforms.selftest.SelfTest).

``TB_SEED`` picks the vectors (``make_vectors(seed=...)``); ``TB_CORRUPT`` >= 0 names
the expected word that was corrupted in the ROM, so the run must FAIL. Two runs
back to back; both must report the same verdict and the cycle count of the
systolic array's model.
"""

import os

import cocotb
from cocotb.triggers import RisingEdge

from platforms.selftest import make_vectors
from sim.cocotb_stream import start_clock_and_reset

VECTORS = make_vectors(seed=int(os.environ["TB_SEED"]))
CORRUPT = int(os.environ["TB_CORRUPT"])


@cocotb.test()
async def selftest_verdict(dut):
    await start_clock_and_reset(dut)
    for _ in range(2):
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        for _ in range(4 * VECTORS.cycles + 100):
            await RisingEdge(dut.clk)
            if dut.done.value:
                break
        assert dut.done.value, "the self-test never finished"
        assert int(dut.passed.value) == int(CORRUPT < 0), f"passed={dut.passed.value}"
        assert int(dut.cycles.value) == VECTORS.cycles
