"""cocotb testbench for the emitted Verilog of :class:`rtl.linear.LinearKernel`.

Kernel parameters arrive as ``TB_PI``, ``TB_PO``, ``TB_T``, ``TB_MAX_IN``,
``TB_MAX_OUT``, ``TB_BUS_WIDTH`` and optionally ``TB_MAX_WEIGHT_WORDS``,
``TB_DSP_PACKING``; ``TB_SEED`` seeds the stimulus. Expected
values come from the golden spec, cycle counts from ``rtl.linear.exp_cycles``.
"""

import json
import os

import cocotb
import numpy as np

from golden.gemm import int8_matmul
from rtl.linear import LinearConfig, exp_cycles
from sim.cocotb_stream import run_streams, start_clock_and_reset
from sim.linear_images import assemble_outputs, matrix_image, token_beats

CONFIG = LinearConfig(pi=int(os.environ["TB_PI"]), po=int(os.environ["TB_PO"]),
                      t=int(os.environ["TB_T"]), max_in=int(os.environ["TB_MAX_IN"]),
                      max_out=int(os.environ["TB_MAX_OUT"]),
                      max_weight_words=int(os.environ.get("TB_MAX_WEIGHT_WORDS", 0)) or None,
                      bus_width=int(os.environ["TB_BUS_WIDTH"]),
                      dsp_packing=os.environ.get("TB_DSP_PACKING", "False") == "True")
SEED = int(os.environ.get("TB_SEED", "0"))
N_TOKENS = int(os.environ.get("TB_TOKENS", "129"))


def make_jobs(rng, shapes):
    """Random int8 weights, int32 biases and token lists for ``(d_in, d_out, tokens)`` shapes."""
    jobs = []
    for d_in, d_out, tokens in shapes:
        if isinstance(tokens, int):
            tokens = sorted(rng.choice(N_TOKENS, size=tokens, replace=False).tolist())
        jobs.append({
            "weight": rng.integers(-128, 128, (d_out, d_in)),
            "bias": rng.integers(-(1 << 20), 1 << 20, d_out),
            "tokens": tokens,
        })
    return jobs


async def run_jobs(dut, x, jobs, i_flow=1.0, o_flow=1.0, seed=SEED):
    """Run ``jobs`` on the DUT, check every output row; return the cycle count."""
    w_beats, x_beats, y_count = [], [], 0
    for n, job in enumerate(jobs):
        d_out, d_in = job["weight"].shape
        w_beats += matrix_image(CONFIG, f"job {n}", job["weight"], job["bias"])
        x_beats += token_beats(CONFIG, x[:, :d_in], job["tokens"])
        y_count += len(job["tokens"]) * -(-d_out // CONFIG.po)
    res = await run_streams(dut, {"w": w_beats, "x": x_beats}, {"y": y_count},
                            i_flow=i_flow, o_flow=o_flow, seed=seed)
    words, cycles = res["y"]
    outputs = assemble_outputs(CONFIG, words, [job["weight"].shape[0] for job in jobs])
    for n, (job, out) in enumerate(zip(jobs, outputs)):
        d_in = job["weight"].shape[1]
        expected = int8_matmul(x[job["tokens"], :d_in], job["weight"].T) + job["bias"]
        assert sorted(out) == sorted(job["tokens"]), f"job {n}: tokens {sorted(out)}"
        for row, token in enumerate(job["tokens"]):
            if not np.array_equal(out[token], expected[row]):
                raise AssertionError(f"job {n} token {token}: got {out[token]}, "
                                     f"expected {expected[row]}")
    return cycles[-1] + 1


@cocotb.test()
async def random_jobs_with_gaps_and_backpressure(dut):
    await start_clock_and_reset(dut)
    rng = np.random.default_rng(SEED)
    max_in, max_out = int(os.environ["TB_MAX_IN"]), int(os.environ["TB_MAX_OUT"])
    x = rng.integers(-128, 128, (N_TOKENS, max_in))
    shapes = [(int(rng.integers(1, max_in + 1)), int(rng.integers(1, max_out + 1)),
               int(rng.integers(1, 9))) for _ in range(5)]
    shapes += [(max_in, max_out, 1), (1, 1, 2)]
    for flows in ((1.0, 1.0), (0.5, 0.7), (0.9, 0.3)):
        await run_jobs(dut, x, make_jobs(rng, shapes), *flows, seed=SEED + len(shapes))


@cocotb.test(skip="TB_SHAPES" not in os.environ)
async def model_shapes_cycles(dut):
    """Full-rate jobs from ``TB_SHAPES`` (JSON list of [d_in, d_out, tokens]); report to ``TB_REPORT``."""
    await start_clock_and_reset(dut)
    rng = np.random.default_rng(SEED)
    shapes = [tuple(s) for s in json.loads(os.environ["TB_SHAPES"])]
    x = rng.integers(-128, 128, (N_TOKENS, max(s[0] for s in shapes)))
    report = []
    for shape in shapes:
        # Once alone (weights load first), then twice back to back: the second
        # job's marginal cycles are the steady state, its weights loaded while
        # the first computes.
        row = {"shape": list(shape)}
        for key, copies in (("cycles", 1), ("cycles_two", 2)):
            jobs = make_jobs(rng, [(shape[0], shape[1], list(range(shape[2])))] * copies)
            row[key] = await run_jobs(dut, x, jobs)
            row["model_" + key] = exp_cycles(CONFIG, [shape] * copies)
        report.append(row)
        dut._log.info("%s", row)
    if "TB_REPORT" in os.environ:
        with open(os.environ["TB_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
    for row in report:
        for key in ("cycles", "cycles_two"):
            assert abs(row[key] - row["model_" + key]) <= 0.02 * row["model_" + key], row
