"""Post-training quantization of a float weight set into a :class:`~golden.int_model.QuantParams`.

Two methods write the same format (the one the integer forward and the hardware
consume):

``"minmax"`` — the naive baseline: every activation quantizer per tensor from the
observed min / max (symmetric for q, k, v; asymmetric elsewhere).

``"dual_stage"`` — CoQMoE / RepQ-ViT (``anchors.md`` section 2):

1. stage one calibrates precise quantizers on the float model: channel-wise
   asymmetric uniform quantizers for every post-LayerNorm activation (the inputs of
   qkv, dense fc1, the gate of every task, every expert's fc1, and the classifier
   head), with the clipping percentile chosen per channel by the least L2 error; per
   tensor percentile-searched quantizers elsewhere (:mod:`golden.quantizers`), except
   v and the attention output, one symmetric scale per channel (folded into proj's
   columns);
2. stage two re-parameterises them into the hardware's: the channel-wise scales and
   zero points fold into the LayerNorm affine and into the columns and bias of every
   linear layer that reads it (:mod:`golden.reparam`; the gate gains a bias), which
   leaves one scale and one zero point per tensor and the same codes.

Attention probabilities (either method, ``attention=``): codes of the
deferred-normalised exponentials ``exp(s - row max)``, whose quantizer reference
``Delta`` is the row maximum (code 0) with the normalisation folded into one
reciprocal per row, so they need no calibration. 4-bit ``"log2"`` codes
(:func:`golden.softmax.log2_codes`, octave steps), 4-bit ``"sqrt2"`` codes
(:func:`golden.softmax.sqrt2_codes`, the reference's log-sqrt2 quantizer in its
shift-only form: ``2**-ceil(c/2)`` into an even and an odd accumulator, one multiply
by sqrt(2) per output) or ``"mant4"`` (:func:`golden.softmax.mant4_codes`, the
exponential with a 4-bit mantissa: a 5-bit table entry per value); the attention
kernel runs each (``AttentionConfig.codes``).

Both methods: weights symmetric per output channel with ``weight_bits``; the residual
stream int16 at its largest calibrated magnitude; patch-embedding input the 8-bit
pixels; GELU output range from the whole table's input range.
"""

import math

import numpy as np

from .float_model import classify, forward, gelu
from .gelu import gelu_table
from .int_model import LOG2_SCALE, QuantParams
from .layernorm import affine_params, eps_int
from .quant import (
    check_bits,
    dyadic,
    fold_zero_point,
    int_range,
    quantize,
    quantize_bias,
    quantize_weight_per_channel,
)
from .quantizers import PERCENTILES, search_symmetric, search_uniform, uniform_params
from .reparam import per_tensor_target, reparam_layernorm, reparam_linear
from .softmax import ATTENTION_CODES
from .weights import validate_weights

__all__ = ["METHODS", "MIN_SAMPLES_PER_CHANNEL", "float_layers", "norm_readers", "collect_samples",
           "reparameterise", "calibrate", "calibrate_minmax", "calibrate_dual_stage"]

METHODS = ("minmax", "dual_stage")
#: The channel-wise percentile search needs this many samples per channel (tokens x
#: images) so that its tightest candidate, 0.999, clips at least one sample.
MIN_SAMPLES_PER_CHANNEL = math.ceil(1 / (1 - PERCENTILES[0]))


def _no_progress(iterable, description):
    return iterable


def _check_images(cfg, images):
    if len(images) == 0:
        raise ValueError("images must hold at least one calibration image")
    images = [np.asarray(im, np.float64) for im in images]
    shape = (cfg.in_chans, *cfg.image_size)
    for i, im in enumerate(images):
        if im.shape != shape:
            raise ValueError(f"images[{i}] must have shape {shape}, got {im.shape}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"images[{i}] holds NaN or inf")
    return images


# --------------------------------------------------------------------------- float side

def float_layers(cfg, weights):
    """The float layers by QuantParams name, float64: linear layers as ``name -> [W (out, in),
    bias]`` (gates with a zero bias, experts as ``blocks.l.mlp.experts.<e>.fc1``) and
    LayerNorms as ``name -> [gamma, beta]``."""
    f64 = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    lin = {"patch_embed": [f64["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1),
                           f64["patch_embed.proj.bias"]]}
    norms = {}
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        for n in ("norm1", "norm2"):
            norms[p + n] = [f64[p + n + ".weight"], f64[p + n + ".bias"]]
        for n in ("attn.qkv", "attn.proj"):
            lin[p + n] = [f64[p + n + ".weight"], f64[p + n + ".bias"]]
        m = p + "mlp."
        if cfg.is_moe(b):
            for t in range(cfg.num_tasks):
                lin[f"{m}gate.{t}"] = [f64[f"{m}gate.{t}.w_gate"].T, np.zeros(cfg.num_experts)]
            for e in range(cfg.num_experts):
                lin[f"{m}experts.{e}.fc1"] = [f64[m + "experts.htoh4.weight"][e],
                                              f64[m + "experts.htoh4.bias"][e]]
                lin[f"{m}experts.{e}.fc2"] = [f64[m + "experts.h4toh.weight"][e],
                                              f64[m + "experts.h4toh.bias"][e]]
        else:
            for n in ("fc1", "fc2"):
                lin[m + n] = [f64[m + n + ".weight"], f64[m + n + ".bias"]]
    if cfg.num_classes:
        norms["norm"] = [f64["norm.weight"], f64["norm.bias"]]
        lin["head"] = [f64["head.weight"], f64["head.bias"]]
    return lin, norms


def norm_readers(cfg):
    """LayerNorm name -> the linear layers that read its output."""
    readers = {}
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        readers[p + "norm1"] = [p + "attn.qkv"]
        if cfg.is_moe(b):
            readers[p + "norm2"] = [p + f"mlp.gate.{t}" for t in range(cfg.num_tasks)] + \
                [p + f"mlp.experts.{e}.fc1" for e in range(cfg.num_experts)]
        else:
            readers[p + "norm2"] = [p + "mlp.fc1"]
    if cfg.num_classes:
        readers["norm"] = ["head"]
    return readers


def collect_samples(cfg, weights, images, task, progress):
    """Float traces of the calibration images, stacked per name (tokens as rows); expert
    fc1 outputs over the tokens the float gate routes to each expert."""
    samples = {}

    def add(name, value):
        value = np.asarray(value, np.float64)
        if value.ndim == 3:         # q, k, v: (heads, N, head_dim) -> N x D, head-major channels
            value = value.transpose(1, 0, 2).reshape(value.shape[1], -1)
        samples.setdefault(name, []).append(value.reshape(-1, value.shape[-1]))

    for image in progress(images, "calibration"):
        run = classify if cfg.num_classes else forward
        _, tr = run(cfg, weights, image, task=task, trace=True)
        for name, value in tr.items():
            if not name.endswith(("topk_idx", "probs", "scores")):
                add(name, value)
        for b in (b for b in range(cfg.depth) if cfg.is_moe(b)):
            p = f"blocks.{b}.mlp."
            h, idx = tr[f"blocks.{b}.norm2"], tr[p + "topk_idx"]
            for e in range(cfg.num_experts):
                rows = h[(idx == e).any(axis=1)]
                hid = rows @ np.asarray(weights[p + "experts.htoh4.weight"][e], np.float64).T \
                    + weights[p + "experts.htoh4.bias"][e]
                add(f"{p}experts.{e}.fc1", hid)
                add(f"{p}experts.fc1", hid)
    return {name: np.concatenate(parts) for name, parts in samples.items()}


# --------------------------------------------------------------------------- quantizers

class _Activations:
    """The activation quantizers of one method at ``bits``: ``(scale, signed zero point)``."""

    def __init__(self, method, bits):
        self.method, self.bits = method, bits
        self.offset = 1 << (bits - 1)       # unsigned codes [0, 2**b - 1] -> signed

    def asymmetric(self, x):
        x = np.asarray(x, np.float64)
        if self.method == "minmax":
            scale, zp = uniform_params(x.min(), x.max(), self.bits)
            return float(scale), int(zp) - self.offset
        scale, zp, _ = search_uniform(x, self.bits)
        return scale, zp - self.offset

    def symmetric(self, x):
        if self.method == "minmax":
            amax = float(np.abs(x).max(initial=0.0))
            return amax / (self.offset - 1) if amax > 0 else 1.0
        return search_symmetric(x, self.bits)[0]

    def values(self, x):
        """v's scales, one per channel (columns of ``x``): per tensor for min/max, per
        channel for the dual-stage method (free in hardware: v has a requantizer per
        channel, and the attention output keeps v's scales, which fold into proj)."""
        if self.method == "minmax":
            return np.full(x.shape[1], self.symmetric(x))
        scales = np.array([search_symmetric(x[:, c], self.bits)[0] for c in range(x.shape[1])])
        # A channel that is zero on every calibration token gets the smallest live scale,
        # not search_symmetric's 1.0, which would shrink proj's other columns by the fold.
        dead = ~np.abs(x).max(axis=0).astype(bool)
        if dead.any() and not dead.all():
            scales[dead] = scales[~dead].min()
        return scales

    def code_range(self, scale, zp):
        """Real values of the lowest and highest code."""
        lo, hi = int_range(self.bits)
        return scale * (lo - zp), scale * (hi - zp)


def reparameterise(cfg, lin, norms, samples, bits):
    """Stage one's channel-wise post-LayerNorm quantizers and stage two's fold, in place.

    For every LayerNorm of :func:`norm_readers`: the per-channel percentile search on
    its calibration outputs ``samples[norm]`` (tokens x channels) at ``bits``, then
    :func:`golden.reparam.per_tensor_target` and the fold into ``norms[norm]`` and
    every reader in ``lin`` (as returned by :func:`float_layers`).

    Returns
    -------
    dict
        ``norm -> (scale*, zp*, scale_c, zp_c)``: the per-tensor quantizer of the
        re-parameterised output and the channel-wise one of the original output (whose
        codes it reproduces), zero points as signed codes (unsigned minus ``2**(bits-1)``).
    """
    out = {}
    offset = 1 << (bits - 1)
    for norm, readers in norm_readers(cfg).items():
        scale_c, zp_c, _ = search_uniform(samples[norm], bits, axis=1)
        scale, zp, r, b = per_tensor_target(scale_c, zp_c)
        norms[norm] = list(reparam_layernorm(*norms[norm], r, b))
        for name in readers:
            lin[name] = list(reparam_linear(*lin[name], r, b))
        out[norm] = (scale, zp - offset, scale_c, zp_c - offset)
    return out


# --------------------------------------------------------------------------- QuantParams entries

def _linear_entries(name, layer, s_in, zp_in, s_out, weight_bits):
    """Per-channel weights, folded int32 bias and the dyadic requantizer of one layer."""
    w, b = layer
    w_q, s_w = quantize_weight_per_channel(w, weight_bits)
    b_q = quantize_bias(name, b, s_in * s_w)
    mult, shift = dyadic(s_in * s_w / s_out)
    return {f"{name}.weight": w_q, f"{name}.bias": fold_zero_point(name, w_q, b_q, zp_in),
            f"{name}.mult": mult.astype(np.int32), f"{name}.shift": shift.astype(np.int32)}


def _norm_entries(cfg, name, norm, quantizer, res_scale):
    """The integer LayerNorm at the per-tensor ``quantizer`` (scale, zp, and the per-channel
    real meaning of its codes)."""
    scale, zp, channel_scale, channel_zp = quantizer
    gain, bias, shift = affine_params(*norm, scale, zp)
    return {f"{name}.gain": gain, f"{name}.bias": bias, f"{name}.shift": np.array(shift, np.int32),
            f"{name}.eps": np.array(eps_int(cfg.ln_eps, cfg.embed_dim, res_scale), np.int64),
            f"{name}.scale": np.asarray(channel_scale, np.float64),
            f"{name}.zero_point": np.asarray(channel_zp).astype(np.int32)}


def _ffn_entries(prefix, fc1, fc2, s_in, zp_in, hidden, acts, weight_bits, res_scale):
    """fc1 -> GELU table -> fc2 for one dense MLP or one expert (``prefix`` ends in '.' or is '')."""
    s_g, zp_g = acts.asymmetric(hidden)
    out_range = gelu(np.linspace(*acts.code_range(s_g, zp_g), 4097))
    s_o, zp_o = uniform_params(out_range.min(), out_range.max(), acts.bits)
    s_o, zp_o = float(s_o), int(zp_o) - acts.offset
    out = _linear_entries(f"{prefix}fc1", fc1, s_in, zp_in, s_g, weight_bits)
    out.update({f"{prefix}fc1.scale": np.array(s_g), f"{prefix}fc1.zero_point": np.array(zp_g, np.int32),
                f"{prefix}gelu.table": gelu_table(s_g, zp_g, s_o, zp_o, acts.bits),
                f"{prefix}gelu.scale": np.array(s_o), f"{prefix}gelu.zero_point": np.array(zp_o, np.int32)})
    out.update(_linear_entries(f"{prefix}fc2", fc2, s_o, zp_o, res_scale, weight_bits))
    return out


def calibrate(cfg, weights, images, method="minmax", weight_bits=8, act_bits=8, task=0,
              progress=None, attention="log2"):
    """Quantize ``weights`` with ``method`` on the calibration ``images``.

    Parameters
    ----------
    cfg : ModelConfig
    weights : mapping of str to array_like
        A float weight set for ``cfg``.
    images : sequence of float arrays, each (C, H, W) in [0, 1)
        The calibration set (training data, never the test split).
    method : str
        ``"minmax"`` or ``"dual_stage"`` (module docstring).
    weight_bits, act_bits : int
        Widths in [2, 8] of the weights and of the activations that feed the MAC
        array (LayerNorm outputs, q/k/v, attention output, GELU input and output).
        The hardware runs 8 and 8; narrower widths are the accuracy study's emulation.
    task : int
        The task whose gate routes the calibration tokens (every task's gate is
        quantized from the same post-LayerNorm quantizer).
    progress : callable, optional
        ``progress(iterable, description)`` wraps the per-image loop (a progress bar).
    attention : str
        The attention probabilities' code form, one of
        ``golden.softmax.ATTENTION_CODES``: ``"log2"`` (4-bit log2, the attention
        kernel's default), ``"sqrt2"`` (4-bit log-sqrt2 as the reference, odd codes
        through a second accumulator and one sqrt(2) multiply) or ``"mant4"`` (a
        4-bit mantissa per exponential, the most precise); the kernel runs
        the same form (``AttentionConfig(codes=...)``).

    Returns
    -------
    QuantParams

    Raises
    ------
    ValueError
        Naming the parameter: an empty calibration set, an image of the wrong shape or
        with NaN, ``weight_bits`` / ``act_bits`` outside [2, 8], an unknown method, or for
        ``"dual_stage"`` fewer images than the channel-wise search needs
        (:data:`MIN_SAMPLES_PER_CHANNEL` tokens per channel).
    """
    check_bits("weight_bits", weight_bits, 2, 8)
    check_bits("act_bits", act_bits, 2, 8)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if attention not in ATTENTION_CODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_CODES)}, got {attention!r}")
    images = _check_images(cfg, images)
    if method == "dual_stage" and len(images) * cfg.num_tokens < MIN_SAMPLES_PER_CHANNEL:
        need = math.ceil(MIN_SAMPLES_PER_CHANNEL / cfg.num_tokens)
        raise ValueError(f"images: the channel-wise calibration needs at least "
                         f"{MIN_SAMPLES_PER_CHANNEL} samples per channel, i.e. {need} images of "
                         f"{cfg.num_tokens} tokens; got {len(images)}")
    weights = validate_weights(weights, cfg)
    samples = collect_samples(cfg, weights, images, task, progress or _no_progress)
    acts = _Activations(method, act_bits)
    lin, norms = float_layers(cfg, weights)
    if method == "dual_stage":
        norm_q = reparameterise(cfg, lin, norms, samples, act_bits)
    else:
        norm_q = {name: (*q, np.full(cfg.embed_dim, q[0]), np.full(cfg.embed_dim, q[1]))
                  for name, q in ((n, acts.asymmetric(samples[n])) for n in norm_readers(cfg))}

    res_names = ["embed"] + [f"blocks.{b}.{t}" for b in range(cfg.depth)
                             for t in ("attn.proj", "x_attn", "mlp.out", "out")]
    pos = np.asarray(weights["pos_embed"][0], np.float64).copy()
    pos[0] += weights["cls_token"][0, 0]
    res_scale = max(max(float(np.abs(samples[n]).max()) for n in res_names),
                    float(np.abs(pos).max())) / 32767
    t = {"quant.weight_bits": np.array(weight_bits, np.int32),
         "quant.act_bits": np.array(act_bits, np.int32),
         "quant.attn_codes": np.array(ATTENTION_CODES.index(attention), np.int32),
         "residual.scale": np.array(res_scale), "pos_embed": quantize(pos, res_scale, bits=16)}
    t.update(_linear_entries("patch_embed", lin["patch_embed"], 1 / 256, -128, res_scale, 8))
    d = cfg.embed_dim

    def add_norm(name):
        t.update(_norm_entries(cfg, name, norms[name], norm_q[name], res_scale))
        return norm_q[name][:2]

    for b in range(cfg.depth):
        p = f"blocks.{b}."
        s_h, zp_h = add_norm(p + "norm1")
        s_q, s_k = (acts.symmetric(samples[p + f"attn.{n}"]) for n in "qk")
        s_v = acts.values(samples[p + "attn.v"])
        t.update(_linear_entries(p + "attn.qkv", lin[p + "attn.qkv"], s_h, zp_h,
                                 np.concatenate([np.full(d, s_q), np.full(d, s_k), s_v]),
                                 weight_bits))
        t.update({p + "attn.q.scale": np.array(s_q), p + "attn.k.scale": np.array(s_k),
                  p + "attn.v.scale": s_v})
        mult, shift = dyadic(s_q * s_k / math.sqrt(cfg.head_dim) / LOG2_SCALE)
        t[p + "attn.scores.mult"] = mult.astype(np.int32)
        t[p + "attn.scores.shift"] = shift.astype(np.int32)
        # proj reads the attention output at v's per-channel scales: fold them into its
        # columns against the largest one (the same real product, one input scale).
        w_proj, b_proj = lin[p + "attn.proj"]
        s_a = float(s_v.max())
        t.update(_linear_entries(p + "attn.proj", (w_proj * (s_v / s_a), b_proj), s_a, 0,
                                 res_scale, weight_bits))
        s_h, zp_h = add_norm(p + "norm2")
        m = p + "mlp."
        if not cfg.is_moe(b):
            t.update(_ffn_entries(m, lin[m + "fc1"], lin[m + "fc2"], s_h, zp_h, samples[m + "fc1"],
                                  acts, weight_bits, res_scale))
            continue
        for task_id in range(cfg.num_tasks):
            g = f"{m}gate.{task_id}"
            t.update(_linear_entries(g, lin[g], s_h, zp_h, LOG2_SCALE, weight_bits))
        per_expert = []
        for e in range(cfg.num_experts):
            key = f"{m}experts.{e}.fc1"
            hidden = samples[key] if len(samples.get(key, ())) else samples[m + "experts.fc1"]
            per_expert.append(_ffn_entries("", lin[key], lin[f"{m}experts.{e}.fc2"], s_h, zp_h, hidden,
                                           acts, weight_bits, res_scale))
        for name in per_expert[0]:
            t[m + "experts." + name] = np.stack([entry[name] for entry in per_expert])
    if cfg.num_classes:
        s_h, zp_h = add_norm("norm")
        s_logit = max(float(np.abs(samples["logits"]).max()), 1e-12) / 32767
        t.update(_linear_entries("head", lin["head"], s_h, zp_h, s_logit, weight_bits))
        t["head.scale"] = np.array(s_logit)
    return QuantParams(cfg, t).validate()


def calibrate_minmax(cfg, weights, images, task=0, **kwargs):
    """:func:`calibrate` with ``method="minmax"`` (plain per-tensor min/max PTQ)."""
    return calibrate(cfg, weights, images, "minmax", task=task, **kwargs)


def calibrate_dual_stage(cfg, weights, images, task=0, **kwargs):
    """:func:`calibrate` with ``method="dual_stage"`` (CoQMoE / RepQ-ViT)."""
    return calibrate(cfg, weights, images, "dual_stage", task=task, **kwargs)
