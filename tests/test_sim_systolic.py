"""Integration tests: cocotb on the emitted Verilog of the systolic array (sim/tb_systolic.py)."""

import pytest

from rtl.compute.systolic import SystolicArray
from sim.runner import run_cocotb


@pytest.mark.parametrize("rows, cols, k_lanes, operand_width, row_broadcast, long_k", [
    (4, 4, 1, 8, False, True),     # also sums (-128)*(-128) over K_MAX = 131071 terms
    (3, 5, 2, 4, False, False),
    (3, 16, 4, 8, True, False),
])
def test_systolic_verilog(rows, cols, k_lanes, operand_width, row_broadcast, long_k):
    params = dict(rows=rows, cols=cols, k_lanes=k_lanes, operand_width=operand_width,
                  row_broadcast=row_broadcast)
    run_cocotb("systolic", params,
               SystolicArray(rows, cols, k_lanes=k_lanes, operand_width=operand_width,
                             row_broadcast=row_broadcast),
               "sim.tb_systolic", env={"TB_SEED": "1", "TB_LONG_K": str(int(long_k))})
