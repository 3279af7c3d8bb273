"""Integration tests: cocotb on the emitted Verilog of the nonlinear units (sim/tb_nonlinear.py)."""

import pytest

from rtl.compute.layernorm import LayerNormUnit
from rtl.compute.softmax import SoftmaxUnit
from rtl.moe.gating import Gating
from sim.runner import run_cocotb


@pytest.mark.parametrize("row, lanes, mode", [(129, 4, "codes"), (16, 1, "probs")])
def test_softmax_verilog(row, lanes, mode):
    params = dict(row=row, lanes=lanes, mode=mode)
    run_cocotb("softmax", params, SoftmaxUnit(row, lanes, mode), "sim.tb_nonlinear",
               testcase="softmax_rows", env={"TB_SEED": "4"})


def test_layernorm_verilog():
    params = dict(d=192, lanes=4)
    run_cocotb("layernorm", params, LayerNormUnit(192, 4), "sim.tb_nonlinear",
               testcase="layernorm_tokens", env={"TB_SEED": "5"})


def test_gating_verilog():
    params = dict(experts=16, k=2, max_tokens=129)
    run_cocotb("gating", params, Gating(16, 2, 129), "sim.tb_nonlinear",
               testcase="gating_frames", env={"TB_SEED": "6"})
