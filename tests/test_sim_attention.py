"""Integration test: one M3ViT-tiny attention layer (3 heads x 129 tokens x 64) on the kernel's Verilog."""

import pytest

from golden.softmax import ATTENTION_CODES
from rtl.compute.attention import AttentionConfig, AttentionKernel
from sim.runner import run_cocotb


# The default code form in the default suite; the others are slow here (a Verilator build
# and 387 rows of per-cycle Python each) and covered in the default suite by the Amaranth
# simulator at 577 tokens (tests/test_rtl_attention.py).
@pytest.mark.parametrize("codes", [c if c == ATTENTION_CODES[0] else
                                   pytest.param(c, marks=pytest.mark.slow)
                                   for c in ATTENTION_CODES])
def test_m3vit_tiny_attention_layer_verilog(codes):
    params = dict(r=4, dp=8, h=3, head_dim=64, max_tokens=129, codes=codes)
    run_cocotb("attention", params, AttentionKernel(AttentionConfig(**params)), "sim.tb_attention",
               env={"TB_HEADS": "3", "TB_TOKENS": "129", "TB_SEED": "1"})
