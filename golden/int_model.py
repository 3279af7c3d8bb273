"""Integer forward of a whole MoE-ViT, its quantized parameter set, and min/max PTQ.

:class:`QuantParams` is the one format that quantization produces (here a plain
min/max post-training quantization, :func:`calibrate_minmax`; the dual-stage
quantizer writes the same format) and that :func:`int_forward` and the hardware
consume. It is a flat dict of named numpy arrays plus the model config, stored as
``.npz``; ``docs/arithmetic.md`` lists every name, dtype and shape.

The integer forward uses only the spec's ops (:mod:`golden.quant`,
:mod:`golden.layernorm`, :mod:`golden.softmax`, :mod:`golden.gelu`,
:mod:`golden.moe`). Data formats between them:

==================  =========================================================
tensor              format
==================  =========================================================
pixels              uint8 ``p``; the MAC array sees ``p - 128`` (scale 1/256)
residual stream     int16 at one scale for the whole model (``residual.scale``)
LayerNorm outputs   int8, per-tensor scale and zero point
q, k, v             int8, symmetric per-tensor scales
scores, gate logits int16 log2 domain (``LOG2_FRAC`` fraction bits)
attention probs     4-bit log2 codes, deferred normalisation
attention output    int8 at v's scale
GELU in / out       int8, per-tensor scale and zero point (per expert in MoE)
gate probabilities  uint8 Q0.8
==================  =========================================================
"""

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .config import ModelConfig
from .float_model import forward as float_forward
from .float_model import gelu, patchify
from .gelu import gelu_int, gelu_table
from .gemm import int8_matmul
from .layernorm import affine_params, eps_int, int_layernorm
from .moe import combine, dispatch, topk
from .quant import (dequantize, dyadic, fold_zero_point, linear, quantize, quantize_bias,
                    quantize_weight_per_channel, requantize, residual_add, round_half_up)
from .softmax import LOG2_FRAC, attention_pv, log2_codes, softmax_u8

__all__ = ["LOG2_SCALE", "QuantParams", "IntTrace", "pixels_from_image", "int_forward",
           "calibrate_minmax"]

#: Real value of one log2-domain LSB, as a natural-log logit: ``1 / (log2(e) * 2**LOG2_FRAC)``.
LOG2_SCALE = 1.0 / (math.log2(math.e) * (1 << LOG2_FRAC))
_FORMAT_VERSION = 1


@dataclass
class QuantParams:
    """A quantized parameter set: the model config and a flat dict of named arrays.

    Members
    -------
    config : ModelConfig
    tensors : dict[str, numpy.ndarray]
        Integer weights, folded biases, requantizer multipliers and shifts,
        LayerNorm and GELU constants, and the real scales and zero points they were
        derived from (for dequantizing traces). Names in ``docs/arithmetic.md``.
    """

    config: ModelConfig
    tensors: dict = field(default_factory=dict)

    def __getitem__(self, name):
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"quantized parameter set has no tensor {name!r}") from None

    def scalar(self, name):
        """A 0-d tensor as a Python number."""
        return self[name].item()

    def save(self, path):
        """Write ``.npz`` with the config JSON under ``__config__``."""
        meta = json.dumps({"format": _FORMAT_VERSION, "config": self.config.to_dict()})
        np.savez(path, __config__=np.array(meta), **self.tensors)

    @classmethod
    def load(cls, path):
        """Read a :meth:`save` file; checks the format version and every expected tensor name."""
        with np.load(path, allow_pickle=False) as f:
            if "__config__" not in f:
                raise ValueError(f"{path}: not a quantized parameter set (no __config__)")
            meta = json.loads(str(f["__config__"]))
            if meta.get("format") != _FORMAT_VERSION:
                raise ValueError(f"{path}: format {meta.get('format')}, expected {_FORMAT_VERSION}")
            params = cls(ModelConfig.from_dict(meta["config"]),
                         {k: f[k] for k in f.files if k != "__config__"})
        missing = sorted(set(expected_names(params.config)) - set(params.tensors))
        if missing:
            raise ValueError(f"{path}: missing tensor {missing[0]!r}")
        return params


def expected_names(cfg):
    """Every tensor name of a :class:`QuantParams` for ``cfg``."""
    lin = ("weight", "bias", "mult", "shift")
    names = ["residual.scale", "pos_embed", *(f"patch_embed.{n}" for n in lin)]
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        for ln in ("norm1", "norm2"):
            names += [p + f"{ln}.{n}" for n in ("gain", "bias", "shift", "eps", "scale", "zero_point")]
        names += [p + f"attn.qkv.{n}" for n in lin] + [p + f"attn.proj.{n}" for n in lin]
        names += [p + f"attn.{t}.scale" for t in "qkv"] + [p + "attn.scores.mult", p + "attn.scores.shift"]
        if cfg.is_moe(b):
            names += [p + f"mlp.gate.{t}.{n}" for t in range(cfg.num_tasks) for n in lin]
            mlp = p + "mlp.experts."
        else:
            mlp = p + "mlp."
        names += [mlp + f"fc1.{n}" for n in (*lin, "scale", "zero_point")]
        names += [mlp + f"gelu.{n}" for n in ("table", "scale", "zero_point")]
        names += [mlp + f"fc2.{n}" for n in lin]
    return names


class IntTrace(dict):
    """Integer intermediate tensors by name (the float model's trace names), with their scales.

    ``scales[name] = (scale, zero_point)`` for every tensor that has a real meaning;
    :meth:`dequantized` returns the float view for :func:`golden.metrics.compare_traces`.
    """

    def __init__(self):
        super().__init__()
        self.scales = {}

    def put(self, name, value, scale=None, zero_point=0):
        self[name] = value
        if scale is not None:
            self.scales[name] = (scale, zero_point)

    def dequantized(self):
        out = {}
        for name, value in self.items():
            if name in self.scales:
                scale, zp = self.scales[name]
                out[name] = dequantize(value, np.asarray(scale)[..., None] if np.ndim(scale) else scale,
                                       np.asarray(zp)[..., None] if np.ndim(zp) else zp)
            elif name.endswith("topk_idx"):
                out[name] = value
        return out


def pixels_from_image(cfg, image):
    """Float image in [0, 1) (multiples of 1/256, shape (C, H, W)) to uint8 pixel codes."""
    image = np.asarray(image)
    expected = (cfg.in_chans, *cfg.image_size)
    if image.shape != expected:
        raise ValueError(f"image must have shape {expected}, got {image.shape}")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() >= 1:
        raise ValueError("image values must be finite and in [0, 1)")
    return np.clip(round_half_up(image * 256), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- forward

def _linear(qp, name, x, zero_point=0, bits=8):
    acc = linear(x, qp[f"{name}.weight"], qp[f"{name}.bias"])
    return requantize(acc, qp[f"{name}.mult"], qp[f"{name}.shift"], zero_point, bits)


def _layernorm(qp, name, x):
    return int_layernorm(x, qp[f"{name}.gain"], qp[f"{name}.bias"], qp.scalar(f"{name}.shift"),
                         qp.scalar(f"{name}.eps"))


def _split_heads(cfg, x):
    n = x.shape[0]
    return x.reshape(n, cfg.num_heads, cfg.head_dim).transpose(1, 0, 2)


def _attention(cfg, qp, p, h, trace):
    d = cfg.embed_dim
    qkv = _linear(qp, p + "attn.qkv", h)
    q, k, v = (_split_heads(cfg, qkv[:, i * d:(i + 1) * d]) for i in range(3))
    for t, value in zip("qkv", (q, k, v)):
        trace.put(p + f"attn.{t}", value, qp.scalar(p + f"attn.{t}.scale"))
    scores = np.stack([int8_matmul(q[j], k[j].T) for j in range(cfg.num_heads)])
    u = requantize(scores, qp[p + "attn.scores.mult"], qp[p + "attn.scores.shift"], bits=16)
    codes = log2_codes(u)
    o = attention_pv(codes, v)
    out = o.transpose(1, 0, 2).reshape(-1, d)
    trace.put(p + "attn.scores", u, LOG2_SCALE)
    trace.put(p + "attn.codes", codes)
    trace.put(p + "attn.out", out, qp.scalar(p + "attn.v.scale"))
    return out


def _mlp(qp, p, h, trace):
    g_in = _linear(qp, p + "fc1", h, qp.scalar(p + "fc1.zero_point"))
    g = gelu_int(g_in, qp[p + "gelu.table"])
    trace.put(p + "fc1", g_in, qp.scalar(p + "fc1.scale"), qp.scalar(p + "fc1.zero_point"))
    trace.put(p + "gelu", g, qp.scalar(p + "gelu.scale"), qp.scalar(p + "gelu.zero_point"))
    return _linear(qp, p + "fc2", g, bits=16)


def _expert(qp, p, e, h):
    def pick(name):
        return qp[p + name][e]
    g_in = requantize(linear(h, pick("fc1.weight"), pick("fc1.bias")), pick("fc1.mult"),
                      pick("fc1.shift"), int(pick("fc1.zero_point")))
    g = gelu_int(g_in, pick("gelu.table"))
    return requantize(linear(g, pick("fc2.weight"), pick("fc2.bias")), pick("fc2.mult"),
                      pick("fc2.shift"), bits=16)


def _moe(cfg, qp, p, h, task, trace):
    gate = f"{p}mlp.gate.{task}"
    u = _linear(qp, gate, h, bits=16)
    idx = topk(u, cfg.top_k)
    probs = softmax_u8(u)
    routes = dispatch(idx, probs, cfg.num_experts)
    outputs = {e: _expert(qp, p + "mlp.experts.", e, h[routes.tokens[e]]) for e in routes.active}
    trace.put(p + "mlp.gate_logits", u, LOG2_SCALE)
    trace.put(p + "mlp.gate_probs", probs, 1 / 256)
    trace.put(p + "mlp.topk_idx", idx)
    trace.put(p + "mlp.topk_probs", np.take_along_axis(probs, idx, axis=1), 1 / 256)
    return combine(routes, outputs, h.shape[0], cfg.embed_dim)


def int_forward(qp, pixels, task=0, trace=False):
    """Run one frame through the integer model.

    Parameters
    ----------
    qp : QuantParams
    pixels : uint8 array, shape (C, H, W)
        Pixel codes (value = code / 256), e.g. from :func:`pixels_from_image`.
    task : int
        Selects the gate of every MoE block, in ``[0, num_tasks - 1]``.
    trace : bool
        Also return an :class:`IntTrace` of every intermediate tensor.

    Returns
    -------
    numpy.ndarray of int16, shape (N, D)
        The residual stream after the last block, at ``residual.scale``;
        or ``(out, trace)``.
    """
    cfg = qp.config
    pixels = np.asarray(pixels)
    expected = (cfg.in_chans, *cfg.image_size)
    if pixels.shape != expected:
        raise ValueError(f"pixels must have shape {expected}, got {pixels.shape}")
    if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixels must be integers in [0, 255]")
    if not 0 <= task < cfg.num_tasks:
        raise ValueError(f"task must be in [0, num_tasks-1={cfg.num_tasks - 1}], got {task}")
    res_scale = qp.scalar("residual.scale")
    tr = IntTrace()

    patches = patchify(cfg, pixels.astype(np.int64)).astype(np.int64) - 128
    emb = _linear(qp, "patch_embed", patches, bits=16)
    pos = qp["pos_embed"]
    x = np.concatenate([pos[:1], residual_add(emb, pos[1:])])
    tr.put("embed", x, res_scale)
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        h = _layernorm(qp, p + "norm1", x)
        tr.put(p + "norm1", h, qp.scalar(p + "norm1.scale"), qp.scalar(p + "norm1.zero_point"))
        o = _attention(cfg, qp, p, h, tr)
        y = _linear(qp, p + "attn.proj", o, bits=16)
        x = residual_add(x, y)
        tr.put(p + "attn.proj", y, res_scale)
        tr.put(p + "x_attn", x, res_scale)
        h = _layernorm(qp, p + "norm2", x)
        tr.put(p + "norm2", h, qp.scalar(p + "norm2.scale"), qp.scalar(p + "norm2.zero_point"))
        if cfg.is_moe(b):
            y = _moe(cfg, qp, p, h, task, tr)
        else:
            y = _mlp(qp, p + "mlp.", h, tr)
        x = residual_add(x, y)
        tr.put(p + "mlp.out", y, res_scale)
        tr.put(p + "out", x, res_scale)
    return (x, tr) if trace else x


# --------------------------------------------------------------------------- calibration

def _asymmetric(lo, hi):
    # int8 scale and zero point covering [min(lo, 0), max(hi, 0)].
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    zp = int(np.clip(round_half_up(-lo / scale) - 128, -128, 127))
    return scale, zp


class _Ranges:
    """Running min / max / max-abs per tensor name over the calibration images."""

    def __init__(self):
        self.lo, self.hi = {}, {}

    def add(self, name, value):
        value = np.asarray(value)
        if value.size:
            self.lo[name] = min(self.lo.get(name, math.inf), float(value.min()))
            self.hi[name] = max(self.hi.get(name, -math.inf), float(value.max()))

    def absmax(self, *names):
        return max(max(abs(self.lo[n]), abs(self.hi[n])) for n in names if n in self.lo)


def _linear_entries(name, w, b, s_in, zp_in, s_out):
    """int8 per-channel weights, folded int32 bias and the dyadic requantizer of one layer."""
    w_q, s_w = quantize_weight_per_channel(w)
    b_q = quantize_bias(name, b, s_in * s_w)
    mult, shift = dyadic(s_in * s_w / s_out)
    return {f"{name}.weight": w_q, f"{name}.bias": fold_zero_point(name, w_q, b_q, zp_in),
            f"{name}.mult": mult.astype(np.int32), f"{name}.shift": shift.astype(np.int32)}


def _norm_entries(cfg, name, gamma, beta, rng, res_scale):
    scale, zp = _asymmetric(rng.lo[name], rng.hi[name])
    gain, bias, shift = affine_params(gamma, beta, scale, zp)
    return {f"{name}.gain": gain, f"{name}.bias": bias, f"{name}.shift": np.array(shift, np.int32),
            f"{name}.eps": np.array(eps_int(cfg.ln_eps, cfg.embed_dim, res_scale), np.int64),
            f"{name}.scale": np.array(scale), f"{name}.zero_point": np.array(zp, np.int32)}, scale, zp


def _ffn_entries(name, w1, b1, w2, b2, s_in, zp_in, hidden, res_scale):
    """fc1 -> GELU table -> fc2 for one dense MLP or one expert, from fc1's calibration range."""
    s_g, zp_g = _asymmetric(*hidden)
    out_range = gelu(np.linspace(hidden[0], hidden[1], 4097))
    s_o, zp_o = _asymmetric(float(out_range.min()), float(out_range.max()))
    out = _linear_entries(f"{name}fc1", w1, b1, s_in, zp_in, s_g)
    out.update({f"{name}fc1.scale": np.array(s_g), f"{name}fc1.zero_point": np.array(zp_g, np.int32),
                f"{name}gelu.table": gelu_table(s_g, zp_g, s_o, zp_o),
                f"{name}gelu.scale": np.array(s_o), f"{name}gelu.zero_point": np.array(zp_o, np.int32)})
    out.update(_linear_entries(f"{name}fc2", w2, b2, s_o, zp_o, res_scale))
    return out


def calibrate_minmax(cfg, weights, images, task=0):
    """Plain min/max post-training quantization (W8A8) into a :class:`QuantParams`.

    Runs the float model on ``images`` (float, each (C, H, W) in [0, 1)) and sets every
    activation scale from the observed range: symmetric for q, k, v; asymmetric
    (scale and zero point) for LayerNorm outputs and GELU inputs/outputs; one int16
    scale for the whole residual stream (its largest magnitude, including the
    branch outputs added to it). Weights are symmetric int8 per output channel.
    Expert GELU ranges come from the tokens the float gate routes to each expert
    (the block-wide range for an expert that received none).
    """
    if len(images) == 0:
        raise ValueError("images must hold at least one calibration image")
    rng = _Ranges()
    for image in images:
        _, tr = float_forward(cfg, weights, image, task=task, trace=True)
        for name, value in tr.items():
            if not name.endswith(("topk_idx", "probs")):
                rng.add(name, value)
        for b in (b for b in range(cfg.depth) if cfg.is_moe(b)):
            p = f"blocks.{b}.mlp."
            h, idx = tr[f"blocks.{b}.norm2"], tr[p + "topk_idx"]
            for e in range(cfg.num_experts):
                rows = h[(idx == e).any(axis=1)]
                hid = rows @ weights[p + "experts.htoh4.weight"][e].T.astype(np.float64) \
                    + weights[p + "experts.htoh4.bias"][e]
                rng.add(f"{p}experts.{e}.fc1", hid)
                rng.add(f"{p}experts.fc1", hid)

    res_names = ["embed"] + [f"blocks.{b}.{t}" for b in range(cfg.depth)
                             for t in ("attn.proj", "x_attn", "mlp.out", "out")]
    pos = weights["pos_embed"][0].astype(np.float64).copy()
    pos[0] += weights["cls_token"][0, 0]
    res_scale = max(rng.absmax(*res_names), float(np.abs(pos).max())) / 32767
    t = {"residual.scale": np.array(res_scale), "pos_embed": quantize(pos, res_scale, bits=16)}
    t.update(_linear_entries("patch_embed", weights["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1),
                             weights["patch_embed.proj.bias"], 1 / 256, -128, res_scale))
    d = cfg.embed_dim
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        entries, s_h, zp_h = _norm_entries(cfg, p + "norm1", weights[p + "norm1.weight"],
                                           weights[p + "norm1.bias"], rng, res_scale)
        t.update(entries)
        s_qkv = [rng.absmax(p + f"attn.{n}") / 127 for n in "qkv"]
        t.update(_linear_entries(p + "attn.qkv", weights[p + "attn.qkv.weight"], weights[p + "attn.qkv.bias"],
                                 s_h, zp_h, np.repeat(s_qkv, d)))
        for n, s in zip("qkv", s_qkv):
            t[p + f"attn.{n}.scale"] = np.array(s)
        mult, shift = dyadic(s_qkv[0] * s_qkv[1] / math.sqrt(cfg.head_dim) / LOG2_SCALE)
        t[p + "attn.scores.mult"], t[p + "attn.scores.shift"] = mult.astype(np.int32), shift.astype(np.int32)
        t.update(_linear_entries(p + "attn.proj", weights[p + "attn.proj.weight"],
                                 weights[p + "attn.proj.bias"], s_qkv[2], 0, res_scale))
        entries, s_h, zp_h = _norm_entries(cfg, p + "norm2", weights[p + "norm2.weight"],
                                           weights[p + "norm2.bias"], rng, res_scale)
        t.update(entries)
        if not cfg.is_moe(b):
            m = p + "mlp."
            t.update(_ffn_entries(m, weights[m + "fc1.weight"], weights[m + "fc1.bias"],
                                  weights[m + "fc2.weight"], weights[m + "fc2.bias"], s_h, zp_h,
                                  (rng.lo[m + "fc1"], rng.hi[m + "fc1"]), res_scale))
            continue
        for task_id in range(cfg.num_tasks):
            g = f"{p}mlp.gate.{task_id}"
            w_gate = weights[g + ".w_gate"].T
            t.update(_linear_entries(g, w_gate, np.zeros(cfg.num_experts), s_h, zp_h, LOG2_SCALE))
        m = p + "mlp.experts."
        per_expert = []
        for e in range(cfg.num_experts):
            key = f"{m}{e}.fc1" if f"{m}{e}.fc1" in rng.lo else f"{m}fc1"
            per_expert.append(_ffn_entries(
                "", weights[m + "htoh4.weight"][e], weights[m + "htoh4.bias"][e],
                weights[m + "h4toh.weight"][e], weights[m + "h4toh.bias"][e], s_h, zp_h,
                (rng.lo[key], rng.hi[key]), res_scale))
        for name in per_expert[0]:
            t[m + name] = np.stack([entry[name] for entry in per_expert])
    return QuantParams(cfg, t)
