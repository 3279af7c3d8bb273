"""Integration test: the board self-test core's Verilog reaches PASS with the golden ROM, FAIL with one bad word."""

import pytest

from platforms.selftest import SelfTest, make_vectors
from sim.runner import run_cocotb


@pytest.mark.parametrize("corrupt", [-1, 7])
def test_selftest_verilog(corrupt):
    vectors = make_vectors(seed=3)
    if corrupt >= 0:
        vectors = vectors.corrupted(corrupt)
    run_cocotb("selftest", dict(seed=3, corrupt=corrupt), SelfTest(vectors), "sim.tb_selftest")
