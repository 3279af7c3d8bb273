"""Integration tests: cocotb on the emitted Verilog of the systolic array (sim/tb_systolic.py)."""

import pytest

from rtl.systolic import SystolicArray
from sim.runner import run_cocotb


@pytest.mark.parametrize("rows, cols, k_lanes, operand_width, long_k", [
    (4, 4, 1, 8, True),     # also sums (-128)*(-128) over K_MAX = 131071 terms
    (3, 5, 2, 4, False),
])
def test_systolic_verilog(rows, cols, k_lanes, operand_width, long_k):
    params = dict(rows=rows, cols=cols, k_lanes=k_lanes, operand_width=operand_width)
    run_cocotb("systolic", params,
               SystolicArray(rows, cols, k_lanes=k_lanes, operand_width=operand_width),
               "sim.tb_systolic", env={"TB_SEED": "1", "TB_LONG_K": str(int(long_k))})
