"""cocotb testbench for the emitted Verilog of :class:`rtl.compute.linear.LinearKernel`.

Kernel parameters arrive as ``TB_PI``, ``TB_PO``, ``TB_T``, ``TB_MAX_IN``,
``TB_MAX_OUT``, ``TB_BUS_WIDTH`` and optionally ``TB_MAX_WEIGHT_WORDS``,
``TB_DSP_PACKING``; ``TB_SEED`` seeds the stimulus. Expected
values come from the golden spec, cycle counts from ``rtl.compute.linear.exp_cycles``.
"""

import json
import os

import cocotb
import numpy as np

from rtl.compute.linear import LinearConfig, exp_cycles
from sim.cocotb_stream import run_streams, start_clock_and_reset
from sim.linear_images import assemble_outputs, check_outputs, job_streams, random_job

CONFIG = LinearConfig(pi=int(os.environ["TB_PI"]), po=int(os.environ["TB_PO"]),
                      t=int(os.environ["TB_T"]), max_in=int(os.environ["TB_MAX_IN"]),
                      max_out=int(os.environ["TB_MAX_OUT"]),
                      max_weight_words=int(os.environ.get("TB_MAX_WEIGHT_WORDS", 0)) or None,
                      bus_width=int(os.environ["TB_BUS_WIDTH"]),
                      dsp_packing=os.environ.get("TB_DSP_PACKING", "False") == "True")
SEED = int(os.environ.get("TB_SEED", "0"))
N_TOKENS = int(os.environ.get("TB_TOKENS", "129"))


def make_jobs(rng, shapes):
    """Random jobs (int8 requantized outputs, GELU on every other one) for ``(d_in, d_out, tokens)``."""
    jobs = []
    for n, (d_in, d_out, tokens) in enumerate(shapes):
        if isinstance(tokens, int):
            tokens = sorted(rng.choice(N_TOKENS, size=tokens, replace=False).tolist())
        jobs.append(random_job(rng, d_in, d_out, tokens, bits=8, gelu=n % 2 == 0))
    return jobs


async def run_jobs(dut, x, jobs, i_flow=1.0, o_flow=1.0, seed=SEED):
    """Run ``jobs`` on the DUT, check every output row; return the cycle count."""
    w_beats, x_beats, y_count = job_streams(CONFIG, jobs, x)
    res = await run_streams(dut, {"w": w_beats, "x": x_beats}, {"y": y_count},
                            i_flow=i_flow, o_flow=o_flow, seed=seed)
    words, cycles = res["y"]
    check_outputs(CONFIG, jobs, x, words)
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
            row["model_" + key] = exp_cycles(
                CONFIG, [(*shape, job["gelu_table"] is not None) for job in jobs])
        report.append(row)
        dut._log.info("%s", row)
    if "TB_REPORT" in os.environ:
        with open(os.environ["TB_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
    for row in report:
        for key in ("cycles", "cycles_two"):
            assert abs(row[key] - row["model_" + key]) <= 0.02 * row["model_" + key], row


@cocotb.test(skip="TB_JOB" not in os.environ)
async def job_from_file(dut):
    """One job from the ``.npz`` at ``TB_JOB`` (x, weight, bias, mult, shift, zero_point, bits).

    Runs at full rate, checks every row against the golden op, writes the output rows
    to ``TB_OUT`` (``.npz``, key ``y``) and ``{"cycles", "model"}`` to ``TB_REPORT``.
    """
    await start_clock_and_reset(dut)
    f = np.load(os.environ["TB_JOB"])
    x = f["x"]
    job = {"weight": f["weight"], "bias": f["bias"], "mult": f["mult"], "shift": f["shift"],
           "zero_point": int(f["zero_point"]), "bits": int(f["bits"]), "gelu_table": None,
           "tokens": list(range(len(x))), "scores": np.zeros(len(x), int)}
    w_beats, x_beats, y_count = job_streams(CONFIG, [job], x)
    res = await run_streams(dut, {"w": w_beats, "x": x_beats}, {"y": y_count})
    words, cycles = res["y"]
    check_outputs(CONFIG, [job], x, words)
    d_out = job["weight"].shape[0]
    rows = assemble_outputs(CONFIG, words, [d_out])[0]
    np.savez(os.environ["TB_OUT"], y=np.stack([rows[t] for t in job["tokens"]]))
    with open(os.environ["TB_REPORT"], "w") as out:
        json.dump({"cycles": cycles[-1] + 1,
                   "model": exp_cycles(CONFIG, [(x.shape[1], d_out, len(x))])}, out)
