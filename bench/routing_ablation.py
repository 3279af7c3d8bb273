"""Routing ablation: where the W8A8 expert-routing loss comes from, and what would remove it.

Every figure is an agreement of the top-k expert sets with the float model
(``golden.metrics.routing_agreement``), per MoE block, over the evaluation tokens. The
models: the study models ``mnist5k`` and ``digits`` (calibration split; evaluation on
training images after it, never the test split) and M3ViT-tiny with seeded weights
(``init_weights`` seed 0, seeded images), all tasks.

Two kinds of rows:

* **integer model** (``golden.int_model``, dual-stage W8A8) with each attention form,
  and on the mant4 model two gate-path variants computed block-locally from its own
  traces: the gate logits with 4 more fraction bits (top-k on a finer int16 grid), and
  the float gate reading a 16-bit LN2 output (``int_layernorm(..., bits=16)``, the gate
  input of a two-pass int8 GEMV);
* **fake quantization** of the float model (``golden.float_model``'s ``hook``) at the
  integer model's points with exact attention probabilities: every point at 8 bits
  (weights per channel, LayerNorm outputs per channel, q and k per tensor, v and the
  attention output per channel, GELU input and output per tensor, scores and gate logits
  on the 1/64-octave grid, the residual stream int16 at one scale), then each group of
  points left in float (what that group costs), then every activation at 9 and 10 bits.
  The integer model's widths are fixed at <= 8 bits, so width studies need this form.

Prints the tables and writes ``build/quant/routing_ablation.json``.

Usage: ``python -m bench.routing_ablation [--model mnist5k] [--images N]``
"""

import argparse
import json
import re
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from golden.accuracy import SOURCES, TracePool, routing_sources
from golden.config import m3vit_tiny
from golden.datasets import DATASETS, dataset
from golden.float_model import classify, forward, random_image, topk as float_topk
from golden.int_model import LOG2_SCALE, int_forward, pixels_from_image
from golden.layernorm import int_layernorm
from golden.metrics import routing_agreement
from golden.moe import topk
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.quant import dequantize, linear, quantize, quantize_weight_per_channel, requantize
from golden.quantizers import uniform_fake_quant, uniform_params
from golden.softmax import ATTENTION_CODES
from golden.weights import init_weights
from sim.waves import BUILD_DIR

OUT = BUILD_DIR / "quant" / "routing_ablation.json"
MODELS = (*DATASETS, "m3vit_tiny")
#: Fake-quantization groups: name -> the traced points it covers (:func:`_point`).
GROUPS = {
    "weights": (),
    "LayerNorm outputs": ("norm1", "norm2", "norm"),
    "q, k": ("attn.q", "attn.k"),
    "v, attention output": ("attn.v", "attn.out"),
    "scores": ("attn.scores",),
    "GELU in/out": ("mlp.fc1", "mlp.gelu", "mlp.experts.fc1", "mlp.experts.gelu"),
    "gate logits": ("mlp.gate_logits",),
    "residual stream": ("embed", "x_attn", "out", "attn.proj", "mlp.out"),
}


def _point(name):
    """A traced name without its block and expert numbers: ``blocks.3.mlp.experts.2.fc1``
    -> ``mlp.experts.fc1``."""
    return re.sub(r"\.\d+\.", ".", re.sub(r"^blocks\.\d+\.", "", name))


def _model(name, images):
    """cfg, float weights, calibration images, evaluation images, float runner."""
    if name == "m3vit_tiny":
        cfg = m3vit_tiny()
        calib = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)
        seeded = [random_image(cfg, seed=1 + n) for n in range(calib + images)]
        return cfg, init_weights(cfg, seed=0), seeded[:calib], seeded[calib:], forward
    data = dataset(name)
    train, _ = data.load_split("train")
    return (data.config(), data.load_weights(), data.load_split("calibration")[0],
            train[data.calibration_size:data.calibration_size + images], classify)


class FakeQuant:
    """The hook of ``golden.float_model``: ranges from a calibration pass, then fake
    quantization of the points of ``groups`` at ``bits`` (module docstring)."""

    def __init__(self, cfg, weights, images, run):
        self.ranges, self.groups, self.bits = {}, (), 8
        for image in images:
            for task in range(cfg.num_tasks):
                run(cfg, weights, image, task, hook=self._observe)
        self.residual = max(float(np.abs(r).max()) for n, pair in self.ranges.items()
                            if _point(n) in GROUPS["residual stream"] for r in pair)

    def _observe(self, name, value):
        point = _point(name)
        # Per channel: LayerNorm outputs (N, D) over tokens, v (H, N, hd) over tokens.
        axis = 1 if point == "attn.v" else 0 if point in GROUPS["LayerNorm outputs"] else None
        lo, hi = value.min(axis=axis), value.max(axis=axis)
        for key in {name, _pooled(name)}:
            old = self.ranges.get(key)
            self.ranges[key] = (lo, hi) if old is None else (np.minimum(old[0], lo),
                                                              np.maximum(old[1], hi))
        return value

    def __call__(self, name, value):
        point = _point(name)
        group = next((g for g in self.groups if point in GROUPS[g]), None)
        if group is None:
            return value
        if group in ("scores", "gate logits"):
            return np.round(value / LOG2_SCALE) * LOG2_SCALE
        if group == "residual stream":
            return _symmetric(value, self.residual, 16)
        # Per expert where the calibration routed tokens to it, else all experts of the
        # block (as golden.ptq); every other point by name.
        lo, hi = self.ranges[name] if name in self.ranges else self.ranges[_pooled(name)]
        if point == "attn.out":               # at v's per-channel scales (heads x head_dim)
            v = self.ranges[name.removesuffix("out") + "v"]
            return _symmetric(value, np.maximum(np.abs(v[0]), np.abs(v[1])).reshape(-1), self.bits)
        if point == "attn.v":
            return _symmetric(value, np.maximum(np.abs(lo), np.abs(hi))[:, None, :], self.bits)
        if group == "q, k":
            return _symmetric(value, max(abs(lo), abs(hi)), self.bits)
        return uniform_fake_quant(value, *uniform_params(lo, hi, self.bits), self.bits)


def _pooled(name):
    """An expert's point as the point of all experts of its block."""
    return re.sub(r"experts\.\d+\.", "experts.", name)


def _symmetric(value, amax, bits):
    """``value`` through the spec's symmetric quantizer whose largest code is ``amax``."""
    scale = np.maximum(amax, 1e-12) / ((1 << (bits - 1)) - 1)
    return dequantize(quantize(value, scale, bits=bits), scale)


def _weights8(cfg, weights):
    """Every linear weight symmetric per output channel at 8 bits (the gate per expert)."""
    out = dict(weights)
    for name, w in weights.items():
        w = np.asarray(w, np.float64)
        if name.endswith(".w_gate"):
            w = w.T
        elif not name.endswith("weight") or w.ndim < 2 or "norm" in name:
            continue
        flat = w.reshape(-1, w.shape[-1]) if "patch_embed" not in name else w.reshape(w.shape[0], -1)
        codes, scale = quantize_weight_per_channel(flat, 8)
        q = (codes * scale[:, None]).reshape(w.shape)
        out[name] = q.T if name.endswith(".w_gate") else q
    return out


def _agreement(pairs):
    return routing_agreement(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))


def fake_quant_rows(cfg, weights, calib, images, run):
    """``[(row, {block: agreement})]`` of the fake-quantization study, all tasks pooled."""
    fq = FakeQuant(cfg, weights, calib, run)
    refs = {(i, t): run(cfg, weights, im, t, trace=True)[1]
            for i, im in enumerate(images) for t in range(cfg.num_tasks)}
    w8 = _weights8(cfg, weights)

    def routing(groups, bits=8):
        fq.groups, fq.bits = groups, bits
        pairs = {}
        for (i, t), ref in refs.items():
            _, tr = run(cfg, w8 if "weights" in groups else weights, images[i], t, trace=True, hook=fq)
            for b in cfg.moe_blocks:
                key = f"blocks.{b}.mlp.topk_idx"
                pairs.setdefault(f"blocks.{b}", []).append((ref[key], tr[key]))
        return {block: _agreement(p) for block, p in pairs.items()}

    rows = [("every point at 8 bits, exact attention", routing(tuple(GROUPS)))]
    rows += [(f"  ... {g} in float", routing(tuple(x for x in GROUPS if x != g))) for g in GROUPS]
    rows += [(f"every activation at {bits} bits (weights 8)", routing(tuple(GROUPS), bits))
             for bits in (9, 10)]
    return rows


def integer_rows(cfg, weights, calib, images, run):
    """``[(row, {block: agreement}, sources or None)]`` of the integer model, all tasks."""
    rows = []
    for attention in ATTENTION_CODES:
        qp = calibrate(cfg, weights, calib, "dual_stage", attention=attention)
        pool, finer, wide = TracePool(), {}, {}
        for image in images:
            for task in range(cfg.num_tasks):
                ref = run(cfg, weights, image, task, trace=True)[1]
                _, tr = int_forward(qp, pixels_from_image(cfg, image), task, trace=True)
                pool.add(ref, tr.dequantized(), routing_sources(qp, weights, ref, tr, task))
                for b in cfg.moe_blocks:
                    p, block = f"blocks.{b}.", f"blocks.{b}"
                    g = f"{p}mlp.gate.{task}."
                    acc = linear(tr[p + "norm2"], qp[g + "weight"], qp[g + "bias"])
                    # 4 more fraction bits (saturating 16x sooner; shifts below 4 stay 0).
                    u = requantize(acc, qp[g + "mult"], np.maximum(qp[g + "shift"] - 4, 0),
                                   bits=16)
                    h16 = int_layernorm(tr[p + "x_attn"], qp[p + "norm2.gain"], qp[p + "norm2.bias"],
                                        qp.scalar(p + "norm2.shift") - 8, qp.scalar(p + "norm2.eps"),
                                        bits=16)
                    real = qp[p + "norm2.scale"] * (h16 / 256 - qp[p + "norm2.zero_point"])
                    w_gate = np.asarray(weights[f"{p}mlp.gate.{task}.w_gate"], np.float64)
                    finer.setdefault(block, []).append((ref[p + "mlp.topk_idx"], topk(u, cfg.top_k)))
                    wide.setdefault(block, []).append((ref[p + "mlp.topk_idx"],
                                                       float_topk(real @ w_gate, cfg.top_k)))
        rows.append((f"dual_stage/{attention}", pool.routing(), pool.routing_sources()))
        if attention == "mant4":
            rows.append(("  ... gate logits with 4 more fraction bits",
                         {b: _agreement(p) for b, p in finer.items()}, None))
            rows.append(("  ... float gate on a 16-bit LN2 output",
                         {b: _agreement(p) for b, p in wide.items()}, None))
    return rows


def _table(title, rows, blocks, sources=False):
    table = Table(title=title)
    table.add_column("row", justify="left")
    for b in blocks:
        table.add_column(b.removeprefix("blocks."), justify="right")
    if sources:
        for s in SOURCES:
            table.add_column(f"{s} (worst)", justify="right")
    for row in rows:
        label, routing = row[0], row[1]
        cells = [f"{routing[b]:.4f}" for b in blocks]
        if sources:
            worst = min(routing, key=routing.get)
            cells += [f"{row[2][worst][s]:.4f}" if row[2] else "" for s in SOURCES]
        table.add_row(label, *cells)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, action="append", help="models (default: all)")
    ap.add_argument("--images", type=int, help="evaluation images per model (default: 300 for "
                                                "the study models, 6 for M3ViT-tiny)")
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 140)
    report = {}
    for name in args.model or MODELS:
        t0 = time.perf_counter()
        n = args.images or (6 if name == "m3vit_tiny" else 300)
        cfg, weights, calib, images, run = _model(name, n)
        with console.status(f"{name}: integer model"):
            int_rows = integer_rows(cfg, weights, calib, images, run)
        with console.status(f"{name}: fake quantization"):
            fq_rows = fake_quant_rows(cfg, weights, calib, images, run)
        blocks = [f"blocks.{b}" for b in cfg.moe_blocks]
        tokens = len(images) * cfg.num_tokens * cfg.num_tasks
        console.print(_table(f"{name}: routing agreement per MoE block, integer model (W8A8), "
                             f"{tokens} tokens", int_rows, blocks, sources=True))
        console.print(_table(f"{name}: fake quantization of the float model", fq_rows, blocks))
        report[name] = {"tokens": tokens, "images": len(images), "tasks": cfg.num_tasks,
                        "integer": [{"row": r[0].strip(" ."), "routing": r[1], "sources": r[2]}
                                    for r in int_rows],
                        "fake_quant": [{"row": r[0].strip(" ."), "routing": r[1]} for r in fq_rows],
                        "seconds": round(time.perf_counter() - t0, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, sort_keys=True))
    console.print(f"wrote {OUT}")
    return report


if __name__ == "__main__":
    main()
