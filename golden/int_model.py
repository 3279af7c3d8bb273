"""Integer forward of a whole MoE-ViT and its quantized parameter set.

:class:`QuantParams` is the one format that quantization produces (plain min/max
or the dual-stage quantizer, both in :mod:`golden.ptq`) and that :func:`int_forward`
and the hardware consume. It is a flat dict of named numpy arrays plus the model
config, stored as ``.npz``; ``docs/arithmetic.md`` lists every name, dtype and shape
and :func:`expected_shapes` checks them.

The integer forward uses only the spec's ops (:mod:`golden.quant`,
:mod:`golden.layernorm`, :mod:`golden.softmax`, :mod:`golden.gelu`,
:mod:`golden.moe`). Data formats between them (``A`` = ``quant.act_bits``, 8 for
the hardware; narrower widths emulate A6 / A4 in int8 containers):

==================  =========================================================
tensor              format
==================  =========================================================
pixels              uint8 ``p``; the MAC array sees ``p - 128`` (scale 1/256)
residual stream     int16 at one scale for the whole model (``residual.scale``)
LayerNorm outputs   A-bit, per-tensor scale and zero point
q, k, v             A-bit, symmetric; q and k per tensor, v per channel
                    (``attn.v.scale``: one value under min/max, per channel under
                    dual-stage)
scores, gate logits int16 log2 domain (``LOG2_FRAC`` fraction bits)
attention probs     log-domain codes, deferred normalisation: ``quant.attn_codes``
                    indexes ``golden.softmax.ATTENTION_CODES`` (log2, sqrt2, mant4)
attention output    A-bit at v's scale
GELU in / out       A-bit, per-tensor scale and zero point (per expert in MoE)
gate probabilities  uint8 Q0.8
class logits        int16 at ``head.scale`` (classifier configs only)
==================  =========================================================

Weights are symmetric per output channel with ``quant.weight_bits`` bits (8 for
the hardware) in int8 containers.
"""

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .archive import ArchiveError, read_npz, read_string
from .config import ModelConfig
from .float_model import patchify
from .gelu import gelu_int
from .gemm import int8_matmul
from .layernorm import int_layernorm
from .moe import combine, dispatch, topk
from .quant import dequantize, linear, requantize, residual_add, round_half_up
from .softmax import ATTENTION_CODES, LOG2_FRAC, attention_from_scores, softmax_u8

__all__ = ["LOG2_SCALE", "QuantParams", "IntTrace", "expected_shapes", "pixels_from_image",
           "int_forward", "int_classify"]

#: Real value of one log2-domain LSB, as a natural-log logit: ``1 / (log2(e) * 2**LOG2_FRAC)``.
LOG2_SCALE = 1.0 / (math.log2(math.e) * (1 << LOG2_FRAC))
_FORMAT_VERSION = 3
#: Older formats :meth:`QuantParams.load` still reads (see :func:`_format_2`).
_OLD_FORMATS = (2,)


@dataclass
class QuantParams:
    """A quantized parameter set: the model config and a flat dict of named arrays.

    Members
    -------
    config : ModelConfig
    tensors : dict[str, numpy.ndarray]
        Integer weights, folded biases, requantizer multipliers and shifts,
        LayerNorm and GELU constants, the bit widths, and the real scales and zero
        points they were derived from (for dequantizing traces). Names and shapes:
        :func:`expected_shapes`.
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

    @property
    def attention_codes(self):
        """str: the attention probabilities' code form, an entry of
        ``golden.softmax.ATTENTION_CODES`` (``quant.attn_codes`` is its index)."""
        return ATTENTION_CODES[self.scalar("quant.attn_codes")]

    def validate(self, source="quantized parameter set"):
        """Check every tensor name and shape against :func:`expected_shapes`.

        Raises
        ------
        ValueError
            ``<source>: missing tensor 'X'``, ``unexpected tensor 'X'``, ``tensor 'X'
            has shape (..), expected (..) for config '<name>'``, or a value outside its
            type (:data:`TENSOR_TYPES`): ``tensor 'X' has values in [lo, hi], outside
            int8 [-128, 127]``, ``tensor 'X' holds NaN or inf``.
        """
        shapes = expected_shapes(self.config)
        for name, shape in shapes.items():
            if name not in self.tensors:
                raise ValueError(f"{source}: missing tensor {name!r}")
            if np.shape(self.tensors[name]) != shape:
                raise ValueError(f"{source}: tensor {name!r} has shape {np.shape(self.tensors[name])}, "
                                 f"expected {shape} for config {self.config.name!r}")
        for name in self.tensors:
            if name not in shapes:
                raise ValueError(f"{source}: unexpected tensor {name!r}")
        for name, value in self.tensors.items():
            _check_values(source, name, np.asarray(value))
        if not 0 <= self.scalar("quant.attn_codes") < len(ATTENTION_CODES):
            raise ValueError(f"{source}: tensor 'quant.attn_codes' is {self.scalar('quant.attn_codes')}, "
                             f"expected an index in [0, {len(ATTENTION_CODES) - 1}] of "
                             f"{', '.join(ATTENTION_CODES)}")
        return self

    def save(self, path):
        """Write ``.npz`` with the config JSON under ``__config__``."""
        meta = json.dumps({"format": _FORMAT_VERSION, "config": self.config.to_dict()})
        np.savez(path, __config__=np.array(meta), **self.tensors)

    @classmethod
    def load(cls, path):
        """Read a :meth:`save` file; checks the format version and every tensor's name and shape."""
        try:
            text = read_string(path, "__config__")
        except ArchiveError as exc:
            raise ValueError(f"{path}: not a quantized parameter set "
                             f"({str(exc).removeprefix(f'{path}: ')})") from None
        if text is None:
            raise ValueError(f"{path}: not a quantized parameter set (no __config__)")
        try:
            meta = json.loads(text)
            if not isinstance(meta, dict):
                raise ValueError(f"an object expected, not {type(meta).__name__}")
            if meta.get("format") not in (_FORMAT_VERSION, *_OLD_FORMATS):
                raise ValueError(f"format {meta.get('format')}, expected "
                                 f"{' or '.join(map(str, (_FORMAT_VERSION, *_OLD_FORMATS)))}")
            config = ModelConfig.from_dict(meta.get("config"))
        except ValueError as exc:
            raise ValueError(f"{path}: __config__: {exc}") from None
        shapes, upgrade = (_format_2(config) if meta["format"] == 2
                           else (expected_shapes(config), dict))
        tensors = read_npz(path, shapes, strings={"__config__"},
                           context=f" for config {config.name!r}")
        tensors.pop("__config__")
        tensors = upgrade(tensors)
        return cls(config, tensors).validate(str(path))


def _format_2(config):
    """Format 2's stored shapes and the upgrade of its tensors to this format. Format 2
    stored the code form as the flag ``quant.attn_sqrt2`` (zero log2, any other value
    sqrt2, as its integer forward read it) and one scale for v (now one per channel)."""
    shapes = expected_shapes(config)
    stored = {name: "quant.attn_sqrt2" if name == "quant.attn_codes" else name for name in shapes}

    def upgrade(tensors):
        out = {name: tensors[stored[name]] for name in shapes if stored[name] in tensors}
        if "quant.attn_codes" in out:
            out["quant.attn_codes"] = np.array(ATTENTION_CODES.index(
                "sqrt2" if out["quant.attn_codes"] else "log2"), np.int32)
        for name in out:
            if name.endswith("attn.v.scale"):
                out[name] = np.full(shapes[name], out[name], np.float64)
        return out

    return {stored[name]: () if name.endswith("attn.v.scale") else shape
            for name, shape in shapes.items()}, upgrade


#: The number type of each tensor, by the last part of its name: integer tensors may be
#: stored in any integer dtype with values in this type's range; scales are finite floats.
TENSOR_TYPES = {
    "weight": np.int8, "table": np.int8, "gain": np.int16, "pos_embed": np.int16,
    "bias": np.int32, "mult": np.int32, "shift": np.int32, "zero_point": np.int32,
    "weight_bits": np.int32, "act_bits": np.int32, "attn_codes": np.int32, "eps": np.int64,
    "scale": np.float64,
}


def _check_values(source, name, value):
    kind = TENSOR_TYPES[name.rsplit(".", 1)[-1]]
    if np.issubdtype(kind, np.floating):
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise ValueError(f"{source}: tensor {name!r} must hold finite floats "
                             f"({value.dtype}{', NaN or inf' if value.dtype.kind == 'f' else ''})")
        return
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{source}: tensor {name!r} has dtype {value.dtype}, expected "
                         f"integers in {np.dtype(kind).name}")
    info = np.iinfo(kind)
    if value.size and (value.min() < info.min or value.max() > info.max):
        raise ValueError(f"{source}: tensor {name!r} has values in [{value.min()}, "
                         f"{value.max()}], outside {np.dtype(kind).name} "
                         f"[{info.min}, {info.max}]")


def _norm_shapes(name, d):
    # scale / zero_point: the real meaning of each output channel's codes (per channel
    # after the dual-stage fold); the hardware never reads them.
    return {f"{name}.gain": (d,), f"{name}.bias": (d,), f"{name}.shift": (), f"{name}.eps": (),
            f"{name}.scale": (d,), f"{name}.zero_point": (d,)}


def _linear_shapes(name, n_out, n_in, lead=()):
    return {f"{name}.weight": (*lead, n_out, n_in),
            **{f"{name}.{n}": (*lead, n_out) for n in ("bias", "mult", "shift")}}


def _ffn_shapes(name, d, hidden, lead=()):
    out = _linear_shapes(name + "fc1", hidden, d, lead)
    out.update({f"{name}fc1.scale": lead, f"{name}fc1.zero_point": lead,
                f"{name}gelu.table": (*lead, 256), f"{name}gelu.scale": lead,
                f"{name}gelu.zero_point": lead})
    out.update(_linear_shapes(name + "fc2", d, hidden, lead))
    return out


def expected_shapes(cfg):
    """Every tensor of a :class:`QuantParams` for ``cfg``: name -> shape, in a fixed order."""
    d, e = cfg.embed_dim, cfg.num_experts
    shapes = {"quant.weight_bits": (), "quant.act_bits": (), "quant.attn_codes": (),
              "residual.scale": (),
              "pos_embed": (cfg.num_tokens, d), **_linear_shapes("patch_embed", d, cfg.patch_dim)}
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        shapes.update(_norm_shapes(p + "norm1", d))
        shapes.update(_linear_shapes(p + "attn.qkv", 3 * d, d))
        shapes.update({p + "attn.q.scale": (), p + "attn.k.scale": (), p + "attn.v.scale": (d,)})
        shapes.update({p + "attn.scores.mult": (), p + "attn.scores.shift": ()})
        shapes.update(_linear_shapes(p + "attn.proj", d, d))
        shapes.update(_norm_shapes(p + "norm2", d))
        if cfg.is_moe(b):
            for t in range(cfg.num_tasks):
                shapes.update(_linear_shapes(p + f"mlp.gate.{t}", e, d))
            shapes.update(_ffn_shapes(p + "mlp.experts.", d, cfg.expert_hidden, (e,)))
        else:
            shapes.update(_ffn_shapes(p + "mlp.", d, cfg.mlp_hidden))
    if cfg.num_classes:
        shapes.update(_norm_shapes("norm", d))
        shapes.update(_linear_shapes("head", cfg.num_classes, d))
        shapes["head.scale"] = ()
    return shapes


class IntTrace(dict):
    """Integer intermediate tensors by name (the float model's trace names), with their scales.

    ``scales[name] = (scale, zero_point)`` for every tensor that has a real meaning
    (scalars, or arrays that broadcast against it: per channel over the last axis, v's
    per head and channel as (heads, 1, head_dim));
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
                out[name] = dequantize(value, scale, zp)
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

def _act_bits(qp):
    return int(qp.scalar("quant.act_bits"))


def _linear(qp, name, x, zero_point=0, bits=None):
    acc = linear(x, qp[f"{name}.weight"], qp[f"{name}.bias"])
    return requantize(acc, qp[f"{name}.mult"], qp[f"{name}.shift"], zero_point,
                      _act_bits(qp) if bits is None else bits)


def _layernorm(qp, name, x):
    return int_layernorm(x, qp[f"{name}.gain"], qp[f"{name}.bias"], qp.scalar(f"{name}.shift"),
                         qp.scalar(f"{name}.eps"), _act_bits(qp))


def _split_heads(cfg, x):
    n = x.shape[0]
    return x.reshape(n, cfg.num_heads, cfg.head_dim).transpose(1, 0, 2)


def _attention(cfg, qp, p, h, trace):
    d = cfg.embed_dim
    qkv = _linear(qp, p + "attn.qkv", h)
    q, k, v = (_split_heads(cfg, qkv[:, i * d:(i + 1) * d]) for i in range(3))
    s_v = qp[p + "attn.v.scale"]
    for t, value, scale in zip("qkv", (q, k, v), (qp.scalar(p + "attn.q.scale"),
                                                  qp.scalar(p + "attn.k.scale"),
                                                  _split_heads(cfg, s_v[None])), strict=True):
        trace.put(p + f"attn.{t}", value, scale)
    scores = np.stack([int8_matmul(q[j], k[j].T) for j in range(cfg.num_heads)])
    u = requantize(scores, qp[p + "attn.scores.mult"], qp[p + "attn.scores.shift"], bits=16)
    codes, o = attention_from_scores(u, v, qp.attention_codes)
    out = o.transpose(1, 0, 2).reshape(-1, d)
    trace.put(p + "attn.scores", u, LOG2_SCALE)
    trace.put(p + "attn.codes", codes)
    trace.put(p + "attn.out", out, s_v)
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
                      pick("fc1.shift"), int(pick("fc1.zero_point")), _act_bits(qp))
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
    if not isinstance(qp, QuantParams):
        raise TypeError(f"qp must be a QuantParams, not {type(qp).__name__}")
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
        tr.put(p + "norm1", h, qp[p + "norm1.scale"], qp[p + "norm1.zero_point"])
        o = _attention(cfg, qp, p, h, tr)
        y = _linear(qp, p + "attn.proj", o, bits=16)
        x = residual_add(x, y)
        tr.put(p + "attn.proj", y, res_scale)
        tr.put(p + "x_attn", x, res_scale)
        h = _layernorm(qp, p + "norm2", x)
        tr.put(p + "norm2", h, qp[p + "norm2.scale"], qp[p + "norm2.zero_point"])
        if cfg.is_moe(b):
            y = _moe(cfg, qp, p, h, task, tr)
        else:
            y = _mlp(qp, p + "mlp.", h, tr)
        x = residual_add(x, y)
        tr.put(p + "mlp.out", y, res_scale)
        tr.put(p + "out", x, res_scale)
    return (x, tr) if trace else x


def int_classify(qp, pixels, task=0, trace=False):
    """Class logits of one frame: :func:`int_forward`, then the final LayerNorm (``norm``)
    and the head on the class token, requantized to int16 at ``head.scale``.

    Returns
    -------
    numpy.ndarray of int16, shape (C,)
        The predicted class is ``argmax`` (ties to the lower class); or ``(logits, trace)``
        with ``norm`` and ``logits`` added to the trace.

    Raises
    ------
    ValueError
        ``int_classify needs a config with num_classes > 0`` for a backbone.
    """
    if not qp.config.num_classes:
        raise ValueError("int_classify needs a config with num_classes > 0")
    x, tr = int_forward(qp, pixels, task, trace=True)
    h = _layernorm(qp, "norm", x[:1])
    logits = _linear(qp, "head", h, bits=16)
    tr.put("norm", h, qp["norm.scale"], qp["norm.zero_point"])
    tr.put("logits", logits, qp.scalar("head.scale"))
    return (logits[0], tr) if trace else logits[0]
