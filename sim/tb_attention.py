"""cocotb testbench for the emitted Verilog of :class:`rtl.compute.attention.AttentionKernel`.

Parameters: ``TB_R``, ``TB_DP``, ``TB_H``, ``TB_HEAD_DIM``, ``TB_MAX_TOKENS``, ``TB_CODES``
(``log2`` if unset); the workload is ``TB_HEADS`` heads of ``TB_TOKENS`` tokens
(M3ViT-tiny: 3 x 129 x 64), seeded by ``TB_SEED`` (or read from the ``.npz`` at
``TB_DATA``). Checks every output against ``golden.softmax`` and the full-rate cycles
against ``rtl.compute.attention.exp_cycles``; with ``TB_REPORT`` set, writes the measured
cycles there as JSON.
"""

import json
import os

import cocotb
import numpy as np

from rtl.compute.attention import AttentionConfig, exp_cycles
from sim.attention_images import attention_streams, check_attention, golden_attention, random_heads
from sim.cocotb_stream import run_streams, start_clock_and_reset

CONFIG = AttentionConfig(r=int(os.environ["TB_R"]), dp=int(os.environ["TB_DP"]),
                         h=int(os.environ["TB_H"]), head_dim=int(os.environ["TB_HEAD_DIM"]),
                         max_tokens=int(os.environ["TB_MAX_TOKENS"]),
                         codes=os.environ.get("TB_CODES", "log2"))
HEADS = int(os.environ.get("TB_HEADS", "3"))
TOKENS = int(os.environ.get("TB_TOKENS", "129"))
SEED = int(os.environ.get("TB_SEED", "0"))


@cocotb.test()
async def attention_layer(dut):
    await start_clock_and_reset(dut)
    if "TB_DATA" in os.environ:          # q, k, v of a real layer (examples/demo.py)
        f = np.load(os.environ["TB_DATA"])
        q, k, v, mult, shift = f["q"], f["k"], f["v"], int(f["mult"]), int(f["shift"])
    else:
        q, k, v, mult, shift = random_heads(np.random.default_rng(SEED), HEADS, TOKENS,
                                            CONFIG.head_dim)
    dut.mult.value = mult
    dut.shift.value = shift
    kb, vb, qb, count = attention_streams(CONFIG, q, k, v)
    expected = golden_attention(q, k, v, mult, shift, CONFIG.codes)
    res = await run_streams(dut, {"k": kb, "v": vb, "q": qb}, {"o": count})
    check_attention(CONFIG, res["o"][0], expected)
    if "TB_OUT" in os.environ:
        np.savez(os.environ["TB_OUT"], out=expected)
    cycles = res["o"][1][-1] - res["k"][0] + 1
    model = exp_cycles(CONFIG, TOKENS, groups=HEADS // CONFIG.h)
    dut._log.info("cycles %d, model %d", cycles, model)
    if "TB_REPORT" in os.environ:
        with open(os.environ["TB_REPORT"], "w") as f:
            json.dump({"cycles": cycles, "model": model}, f)
    assert cycles == model
    if os.environ.get("TB_GAPS", "1") == "1":
        res = await run_streams(dut, {"k": kb, "v": vb, "q": qb}, {"o": count},
                                i_flow=0.7, o_flow=0.6, seed=SEED)
        check_attention(CONFIG, res["o"][0], expected)
