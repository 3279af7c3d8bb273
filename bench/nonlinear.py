"""Nonlinear units benchmark: measured cycles vs model, and the integer ops' error against float.

Cycles: each unit runs M3ViT-sized work in Amaranth's simulator at full rate (every
source offers a beat per cycle, every sink is always ready) and is compared with
its ``exp_cycles``: softmax rows of 129 (codes and probs) and 16 (probs), LayerNorm
tokens of 192 and 384, at 1 and 2 lanes (and LayerNorm at 16), GELU batches, and
the gating datapath (129 tokens over 16 experts, top-2). ``period`` is the
measured steady-state cycles per row / token (between the last beats of the last
two), ``ideal`` one beat per cycle.

Errors (golden integer op vs float, realistic scales, seeded): softmax_u8 vs float
softmax (gating, E = 16 and 64), log2 codes vs float softmax (the normalised code
weights) and log2-code attention vs float softmax attention (N = 129, head dim 64),
integer LayerNorm vs float LayerNorm (D = 192 and 384), the GELU table vs erf GELU
at every int8 input code (input scale 8/255 and 16/255).

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
from golden.softmax import CODE_ZERO, LOG2_FRAC, attention_pv, log2_codes, softmax_u8
from moevit.packing import pack
from rtl.compute import gelu as gelu_unit
from rtl.compute import layernorm
from rtl.compute import softmax as softmax_unit
from rtl.moe import gating
from sim.nonlinear_images import gating_streams, layernorm_batch, layernorm_streams, softmax_words
from sim.pysim_stream import run_streams
from sim.waves import BUILD_DIR

LOG2E = math.log2(math.e)


def _run(dut, sources, sinks, name):
    """Total cycles (first input transfer to last output, inclusive) and the output cycles."""
    res = run_streams(dut, sources, sinks, name=name)
    out = res[next(iter(sinks))][1]
    return out[-1] - min(res[k][0] for k in sources if res[k]) + 1, out


def cycles():
    rng = np.random.default_rng(0)
    rows = []
    for row, lanes, mode, n in ((129, 1, "codes", 8), (129, 2, "codes", 8), (129, 1, "probs", 8),
                                (129, 2, "probs", 8), (16, 1, "probs", 32), (16, 2, "probs", 32)):
        u = rng.integers(-800, 800, (n, row))
        beats = -(-row // lanes)
        got, out = _run(softmax_unit.SoftmaxUnit(row, lanes, mode),
                        {"i": softmax_words(u, lanes)}, {"o": n * beats},
                        f"bench_softmax_{row}_{lanes}_{mode}")
        rows.append({"unit": f"softmax {mode} row {row} x{lanes}", "work": f"{n} rows",
                     "rtl": got, "model": softmax_unit.exp_cycles([row] * n, lanes, mode),
                     "ideal": n * beats, "period": out[-1] - out[-1 - beats], "per": "row"})
    for d, lanes, n in ((192, 1, 6), (192, 2, 8), (384, 1, 4), (384, 2, 6), (192, 16, 24)):
        p, i, count = layernorm_streams([layernorm_batch(rng, n, d)], d, lanes)
        res = run_streams(layernorm.LayerNormUnit(d, lanes), {"p": p, "i": i}, {"o": count},
                          name=f"bench_ln_{d}_{lanes}")
        out, beats = res["o"][1], d // lanes
        rows.append({"unit": f"layernorm d {d} x{lanes}", "work": f"{n} tokens",
                     "rtl": out[-1] - res["i"][0] + 1, "model": layernorm.exp_cycles(d, lanes, n),
                     "ideal": n * beats, "period": out[-1] - out[-1 - beats], "per": "token"})
    for lanes in (4, 16):
        entries = 4
        table = rng.integers(-128, 128, 256)
        t = [pack(gelu_unit.table_layout(entries), table[j:j + entries])
             for _ in range(3) for j in range(0, 256, entries)]
        beats = 256 // lanes
        codes = np.arange(-128, 128).reshape(beats, lanes)
        i = [pack(gelu_unit.io_layout(lanes), {"data": codes[b], "last": int(b == beats - 1)})
             for _ in range(3) for b in range(beats)]
        res = run_streams(gelu_unit.GeluUnit(lanes, entries=entries), {"t": t, "i": i},
                          {"o": len(i)}, name=f"bench_gelu_{lanes}")
        out = res["o"][1]
        rows.append({"unit": f"gelu x{lanes} (table 64 beats)", "work": "3 batches x 256 codes",
                     "rtl": out[-1] + 1, "model": gelu_unit.exp_cycles([beats] * 3, entries),
                     "ideal": 3 * beats, "period": out[-1] - out[-1 - beats], "per": "batch"})
    u = rng.integers(-400, 400, (129, 16))
    words, expected = gating_streams([u], 2)
    got, _ = _run(gating.Gating(16, 2, 129), {"i": words}, {"o": len(expected)}, "bench_gating")
    lengths = dispatch(topk(u, 2), softmax_u8(u), 16).lengths
    rows.append({"unit": "gating E 16 k 2", "work": "129 tokens", "rtl": got,
                 "model": gating.exp_cycles(16, 2, lengths), "ideal": 129 * 16, "period": None,
                 "per": "token"})
    return rows


def _stats(err, **extra):
    return {"max": float(np.max(err)), "mean": float(np.mean(err)), **extra}


def errors():
    rng = np.random.default_rng(1)
    out = {}
    # Gating softmax: logits with a realistic spread (std 1.5 nats), E = 16 and 64.
    for experts in (16, 64):
        logits = rng.normal(0, 1.5, (4096, experts))
        u = np.clip(np.round(logits * LOG2E * (1 << LOG2_FRAC)), -32768, 32767).astype(np.int64)
        err = np.abs(softmax_u8(u) / 256 - softmax(logits))
        out[f"softmax_u8 vs float softmax, E {experts} (probability)"] = _stats(
            err, lsb=1 / 256, max_in_lsb=float(err.max() * 256))
    # Attention: q, k, v ~ N(0, 1) at int8 scales, N = 129, head dim 64.
    n, hd = 129, 64
    q, k, v = (rng.normal(0, 1, (n, hd)) for _ in range(3))
    sq, sk, sv = (np.abs(t).max() / 127 for t in (q, k, v))
    qq, kq, vq = quantize(q, sq), quantize(k, sk), quantize(v, sv)
    mult, shift = dyadic(sq * sk / math.sqrt(hd) * LOG2E * (1 << LOG2_FRAC))
    codes = log2_codes(requantize(int8_matmul(qq, kq.T), mult, shift, bits=16)).astype(np.int64)
    probs = softmax(q @ k.T / math.sqrt(hd))
    w = np.where(codes < CODE_ZERO, 2.0 ** -codes, 0.0)
    err = np.abs(w / w.sum(axis=-1, keepdims=True) - probs)
    out["log2 codes (normalised weights) vs float softmax, N 129 (probability)"] = _stats(err)
    att = dequantize(attention_pv(codes, vq), sv)
    ref = probs @ v
    out["log2-code attention vs float attention, N 129, head 64"] = _stats(
        np.abs(att - ref), v_lsb=float(sv),
        sqnr_db=float(10 * math.log10((ref ** 2).sum() / ((att - ref) ** 2).sum())))
    # LayerNorm: residual-scale int16 tokens, gamma ~ 1, int8 output at its range.
    for d in (192, 384):
        res_scale = 0.004
        x = layernorm_batch(rng, 64, d)["x"]
        gamma, beta = 1 + rng.normal(0, 0.2, d), rng.normal(0, 0.1, d)
        ref = layer_norm(x * res_scale, gamma, beta, 1e-6)
        s_out = (ref.max() - ref.min()) / 255
        zp = int(np.round(-ref.min() / s_out)) - 128
        gain, bias, shift = affine_params(gamma, beta, s_out, zp)
        y = dequantize(int_layernorm(x, gain, bias, shift, eps_int(1e-6, d, res_scale)), s_out, zp)
        bound = s_out / 2 + np.abs(gamma).max() * 2.0 ** -10
        out[f"int LayerNorm vs float LayerNorm, D {d}"] = _stats(
            np.abs(y - ref), out_lsb=float(s_out), spec_bound=float(bound))
    # GELU table over every int8 code (input range [-3, 5] and [-6, 10]).
    for s_in in (8 / 255, 16 / 255):
        zp_in = -32
        lo, hi = dequantize(np.array([-128, 127]), s_in, zp_in)
        g_lo = min(gelu(np.linspace(lo, hi, 4097)))
        s_o = (gelu(hi) - g_lo) / 255
        zp_o = int(np.round(-g_lo / s_o)) - 128
        codes8 = np.arange(-128, 128)
        g = dequantize(gelu_int(codes8, gelu_table(s_in, zp_in, s_o, zp_o)), s_o, zp_o)
        err = np.abs(g - gelu(dequantize(codes8, s_in, zp_in)))
        out[f"GELU table vs erf GELU, all 256 codes, in scale {s_in * 255:g}/255"] = _stats(
            err, out_lsb=float(s_o), max_in_lsb=float(err.max() / s_o))
    return out


def main(argv=None):
    console = Console(width=None if sys.stdout.isatty() else 140)
    with console.status("simulating the units"):
        cyc = cycles()
    table = Table(title="nonlinear units: cycles at full rate (Amaranth simulator)")
    for col in ("unit", "work", "RTL", "model", "ideal (1 beat/cycle)", "steady period"):
        table.add_column(col, justify="left" if col in ("unit", "work") else "right")
    for r in cyc:
        period = "-" if r["period"] is None else f"{r['period']} / {r['per']}"
        table.add_row(r["unit"], r["work"], f"{r['rtl']:,}", f"{r['model']:,}",
                      f"{r['ideal']:,}", period)
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
