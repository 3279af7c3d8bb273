"""Nonlinear units benchmark: measured cycles vs model, and the integer ops' error against float.

Cycles: each unit runs M3ViT-sized work in Amaranth's simulator at full rate and
is compared with its ``exp_cycles`` (softmax rows of 129 and 16, LayerNorm tokens
of 192 and 384, gating of 129 tokens over 16 experts, top-2).

Errors (golden integer op vs float, realistic scales, seeded):
softmax_u8 vs float softmax (gating), log2-code attention vs float softmax
attention (N = 129, head dim 64), integer LayerNorm vs float LayerNorm, the GELU
table vs erf GELU at every int8 input code.

Prints tables and writes ``build/bench/nonlinear.json``.
Usage: ``python -m bench.nonlinear``
"""

import json
import math
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.float_model import gelu, layer_norm, softmax
from golden.gelu import gelu_int, gelu_table
from golden.gemm import int8_matmul
from golden.layernorm import affine_params, eps_int, int_layernorm
from golden.moe import dispatch, topk
from golden.quant import dequantize, dyadic, quantize, requantize
from golden.softmax import LOG2_FRAC, attention_pv, log2_codes, softmax_u8
from rtl import gating, layernorm
from rtl import softmax as softmax_unit
from sim.nonlinear_images import (gating_streams, layernorm_batch, layernorm_streams,
                                  softmax_words)
from sim.pysim_stream import run_streams
from sim.waves import BUILD_DIR

LOG2E = math.log2(math.e)


def _measured(dut, sources, sinks, name):
    res = run_streams(dut, sources, sinks, name=name)
    out = next(iter(sinks))
    return res[out][1][-1] - min(res[k][0] for k in sources if res[k]) + 1


def cycles():
    rng = np.random.default_rng(0)
    rows = []
    for row, lanes, mode, n in ((129, 1, "codes", 8), (129, 2, "codes", 8), (129, 1, "probs", 8),
                                (129, 2, "probs", 8), (16, 1, "probs", 32), (16, 2, "probs", 32)):
        u = rng.integers(-800, 800, (n, row))
        beats = -(-row // lanes)
        got = _measured(softmax_unit.SoftmaxUnit(row, lanes, mode), {"i": softmax_words(u, lanes)},
                        {"o": n * beats}, f"bench_softmax_{row}_{lanes}_{mode}")
        rows.append({"unit": f"softmax {mode} row {row} x{lanes}", "work": f"{n} rows",
                     "rtl": got, "model": softmax_unit.exp_cycles([row] * n, lanes, mode),
                     "ideal": n * beats})
    for d, lanes, n in ((192, 1, 6), (192, 4, 12), (384, 4, 6)):
        batches = [layernorm_batch(rng, n, d)]
        p, i, count = layernorm_streams(batches, d, lanes)
        dut = layernorm.LayerNormUnit(d, lanes)
        res = run_streams(dut, {"p": p, "i": i}, {"o": count}, name=f"bench_ln_{d}_{lanes}")
        rows.append({"unit": f"layernorm d {d} x{lanes}", "work": f"{n} tokens",
                     "rtl": res["o"][1][-1] - res["i"][0] + 1,
                     "model": layernorm.exp_cycles(d, lanes, n), "ideal": n * d // lanes})
    u = rng.integers(-400, 400, (129, 16))
    words, expected = gating_streams([u], 2)
    got = _measured(gating.Gating(16, 2, 129), {"i": words}, {"o": len(expected)}, "bench_gating")
    lengths = dispatch(topk(u, 2), softmax_u8(u), 16).lengths
    rows.append({"unit": "gating E 16 k 2", "work": "129 tokens", "rtl": got,
                 "model": gating.exp_cycles(16, 2, lengths), "ideal": 129 * 16})
    return rows


def errors():
    rng = np.random.default_rng(1)
    out = {}
    # Gating softmax: logits with a realistic spread (std 1.5 nats), E = 16.
    logits = rng.normal(0, 1.5, (4096, 16))
    u = np.clip(np.round(logits * LOG2E * (1 << LOG2_FRAC)), -32768, 32767).astype(np.int64)
    err = np.abs(softmax_u8(u) / 256 - softmax(logits))
    out["softmax_u8 vs float (probability)"] = {"max": float(err.max()), "mean": float(err.mean())}
    # Attention: q, k, v ~ N(0, 1) at int8 scales, N = 129, head dim 64.
    n, hd = 129, 64
    q, k, v = (rng.normal(0, 1, (n, hd)) for _ in range(3))
    sq, sk, sv = (np.abs(t).max() / 127 for t in (q, k, v))
    qq, kq, vq = quantize(q, sq), quantize(k, sk), quantize(v, sv)
    mult, shift = dyadic(sq * sk / math.sqrt(hd) * LOG2E * (1 << LOG2_FRAC))
    codes = log2_codes(requantize(int8_matmul(qq, kq.T), mult, shift, bits=16))
    att = dequantize(attention_pv(codes, vq), sv)
    ref = softmax(q @ k.T / math.sqrt(hd)) @ v
    out["log2-code attention vs float"] = {
        "max": float(np.abs(att - ref).max()), "mean": float(np.abs(att - ref).mean()),
        "sqnr_db": float(10 * math.log10((ref ** 2).sum() / ((att - ref) ** 2).sum())),
        "v_lsb": float(sv)}
    # LayerNorm: residual-scale int16 tokens, gamma ~ 1, int8 output.
    d, res_scale = 192, 0.004
    b = layernorm_batch(rng, 64, d)
    x = b["x"]
    gamma, beta = 1 + rng.normal(0, 0.2, d), rng.normal(0, 0.1, d)
    ref = layer_norm(x * res_scale, gamma, beta, 1e-6)
    s_out = (ref.max() - ref.min()) / 255
    zp = int(np.round(-ref.min() / s_out)) - 128
    gain, bias, shift = affine_params(gamma, beta, s_out, zp)
    y = dequantize(int_layernorm(x, gain, bias, shift, eps_int(1e-6, d, res_scale)), s_out, zp)
    out["int LayerNorm vs float"] = {"max": float(np.abs(y - ref).max()),
                                     "mean": float(np.abs(y - ref).mean()), "out_lsb": float(s_out)}
    # GELU table over every int8 code, input range [-3, 5].
    s_in, zp_in = 8 / 255, -32
    s_o = (gelu(5.0) + 0.17) / 255
    zp_o = int(np.round(0.17 / s_o)) - 128
    codes8 = np.arange(-128, 128)
    g = dequantize(gelu_int(codes8, gelu_table(s_in, zp_in, s_o, zp_o)), s_o, zp_o)
    err = np.abs(g - gelu(dequantize(codes8, s_in, zp_in)))
    out["GELU table vs erf GELU (all 256 codes)"] = {"max": float(err.max()),
                                                     "mean": float(err.mean()), "out_lsb": float(s_o)}
    return out


def main(argv=None):
    console = Console(width=None if sys.stdout.isatty() else 120)
    with console.status("simulating the units"):
        cyc = cycles()
    table = Table(title="nonlinear units: cycles at full rate (Amaranth simulator)")
    for col in ("unit", "work", "RTL", "model", "ideal (1 beat/cycle)"):
        table.add_column(col, justify="left" if col in ("unit", "work") else "right")
    for r in cyc:
        table.add_row(r["unit"], r["work"], f"{r['rtl']:,}", f"{r['model']:,}", f"{r['ideal']:,}")
    console.print(table)
    err = errors()
    table = Table(title="integer ops vs float")
    for col in ("op", "max abs error", "mean abs error", "note"):
        table.add_column(col, justify="left" if col in ("op", "note") else "right")
    for name, e in err.items():
        note = ", ".join(f"{k} {v:.4g}" for k, v in e.items() if k not in ("max", "mean"))
        table.add_row(name, f"{e['max']:.4g}", f"{e['mean']:.4g}", note)
    console.print(table)
    out_dir = BUILD_DIR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "nonlinear.json").write_text(json.dumps({"cycles": cyc, "errors": err}, indent=2))
    console.print(f"wrote {out_dir / 'nonlinear.json'}")


if __name__ == "__main__":
    main()
