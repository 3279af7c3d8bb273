"""Integration test: cocotb on the emitted Verilog of the TopK -> Dispatcher router (tb_gating)."""

from rtl.routing import Router
from sim.runner import run_cocotb


def test_router_m3vit_verilog():
    params = dict(experts=16, k=2, max_tokens=129, lanes=4)
    run_cocotb("router", params, Router(16, 2, 129, lanes=4), "sim.tb_gating",
               env={"TB_SEED": "7"})
