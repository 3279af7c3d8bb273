"""Integration tests: cocotb on the emitted Verilog of the linear kernel (sim/tb_linear.py)."""

import json

import pytest

from rtl.compute.linear import LinearConfig, LinearKernel
from sim.runner import run_cocotb


@pytest.mark.parametrize("pi, po, t, bus_width, dsp_packing", [
    (4, 4, 3, 64, False), (8, 4, 2, 256, True),
])
def test_linear_verilog(pi, po, t, bus_width, dsp_packing):
    params = dict(pi=pi, po=po, t=t, max_in=48, max_out=40, bus_width=bus_width,
                  dsp_packing=dsp_packing)
    shapes = [[48, 40, 20], [13, 7, 1], [8, 40, 9]]
    run_cocotb("linear", params, LinearKernel(LinearConfig(**params)), "sim.tb_linear",
               env={"TB_SEED": "3", "TB_TOKENS": "24", "TB_SHAPES": json.dumps(shapes)})


@pytest.mark.slow
def test_m3vit_layer_shapes_verilog():
    """Every M3ViT-tiny linear shape (qkv, proj, fc1, fc2, gate, experts at 16 and 129 tokens) on
    the 16x16x3 kernel: bit-exact, cycles within 2 % of the model (bench.linear reports them)."""
    from bench.linear import SHAPES, kernel_params
    params = kernel_params(16, 16, 3)
    run_cocotb("linear", params, LinearKernel(LinearConfig(**params)), "sim.tb_linear",
               testcase="model_shapes_cycles", env={"TB_SHAPES": json.dumps(SHAPES)})
