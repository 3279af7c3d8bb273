"""Integration test: the self-test core's Verilog passes with the golden ROM, fails with a bad word.

The cycle count checked by the testbench is ``rtl.compute.systolic.exp_cycles`` of the vectors' shape.
"""

import pytest

from platforms.selftest import SelfTest, make_vectors
from sim.runner import run_cocotb


@pytest.mark.parametrize("corrupt", [-1, 7])
def test_selftest_verilog(corrupt):
    vectors = make_vectors(seed=3)
    if corrupt >= 0:
        vectors = vectors.corrupted(corrupt)
    run_cocotb("selftest", dict(seed=3, corrupt=corrupt), SelfTest(vectors), "sim.tb_selftest")
