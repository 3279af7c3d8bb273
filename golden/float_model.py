"""Float forward of the M3ViT family in numpy (float64), with a per-layer trace.

This is the reference the integer model is measured against (``golden.metrics``).
Semantics follow M3ViT / Edge-MoE / UbiMoE (see ``docs/arithmetic.md`` and the
project's model notes): pre-norm blocks, exact erf GELU, and the MoE gate of task
``t`` as ``NoisyGate_VMoE`` at eval: ``logits = LN2(x) @ w_gate[t]`` (no bias),
softmax over all experts, top-k (ties to the lower expert id), the top-k
probabilities used *without* renormalisation, ``y = sum_k p_k * expert_k(x)``.

Trace names (shared with ``golden.int_model``): ``embed``; per block ``l``:
``blocks.l.norm1``, ``.attn.q`` / ``.k`` / ``.v`` (H, N, hd), ``.attn.scores``
(H, N, N, scaled, before softmax), ``.attn.probs``, ``.attn.out`` (N, D, before
proj), ``.attn.proj``, ``.x_attn``, ``.norm2``; dense ``.mlp.fc1`` (before GELU),
``.mlp.gelu``; MoE ``.mlp.gate_logits``, ``.mlp.gate_probs``, ``.mlp.topk_idx``,
``.mlp.topk_probs``; both ``.mlp.out`` (the branch) and ``.out`` (after the residual).
"""

import math

import numpy as np

from .weights import validate_weights

__all__ = ["gelu", "layer_norm", "softmax", "patchify", "patch_embed", "attention", "mlp",
           "topk", "moe", "forward", "random_image"]

_ERF = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    """Exact erf GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``, float64."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.asarray(_ERF(x / math.sqrt(2.0)), dtype=np.float64))


def layer_norm(x, gamma, beta, eps):
    """LayerNorm over the last axis (biased variance, as torch)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x, axis=-1):
    """Max-subtracted softmax."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_image(cfg, image):
    image = np.asarray(image)
    expected = (cfg.in_chans, *cfg.image_size)
    if image.shape != expected:
        raise ValueError(f"image must have shape {expected}, got {image.shape}")
    return image


def patchify(cfg, image):
    """``(C, H, W)`` -> ``(num_patches, C*p*p)``: patches row-major, features in (c, ky, kx) order.

    The feature order matches ``patch_embed.proj.weight.reshape(D, -1)``; the dtype is kept.
    """
    image = _check_image(cfg, image)
    c, (gh, gw), p = cfg.in_chans, cfg.grid, cfg.patch_size
    return image.reshape(c, gh, p, gw, p).transpose(1, 3, 0, 2, 4).reshape(gh * gw, c * p * p)


def patch_embed(cfg, weights, image):
    """Class row ``cls_token + pos[0]``, then ``conv16x16(image) + bias + pos[1:]``: (N, D)."""
    image = _check_image(cfg, image)
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or inf")
    w = weights["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1).astype(np.float64)
    x = patchify(cfg, image.astype(np.float64)) @ w.T + weights["patch_embed.proj.bias"]
    pos = weights["pos_embed"][0].astype(np.float64)
    cls = weights["cls_token"][0].astype(np.float64) + pos[:1]
    return np.concatenate([cls, x + pos[1:]])


def attention(cfg, h, w_qkv, b_qkv, w_proj, b_proj, trace=None, prefix=""):
    """Multi-head self-attention of ``h`` (N, D): qkv rows are Q, K, V; head j = channels j*hd..."""
    n, d, hd = h.shape[0], cfg.embed_dim, cfg.head_dim
    qkv = h @ np.asarray(w_qkv, np.float64).T + b_qkv
    q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(n, cfg.num_heads, hd).transpose(1, 0, 2)
               for i in range(3))
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    probs = softmax(scores)
    out = (probs @ v).transpose(1, 0, 2).reshape(n, d)
    y = out @ np.asarray(w_proj, np.float64).T + b_proj
    if trace is not None:
        trace.update({prefix + "attn.q": q, prefix + "attn.k": k, prefix + "attn.v": v,
                      prefix + "attn.scores": scores, prefix + "attn.probs": probs,
                      prefix + "attn.out": out, prefix + "attn.proj": y})
    return y


def mlp(h, w1, b1, w2, b2, trace=None, prefix=""):
    """``fc2(gelu(fc1(h)))``."""
    a = h @ np.asarray(w1, np.float64).T + b1
    g = gelu(a)
    if trace is not None:
        trace.update({prefix + "fc1": a, prefix + "gelu": g})
    return g @ np.asarray(w2, np.float64).T + b2


def topk(values, k):
    """Indices of the ``k`` largest values per row, largest first; ties go to the lower index."""
    values = np.asarray(values)
    if not 1 <= k <= values.shape[-1]:
        raise ValueError(f"k must be in [1, {values.shape[-1]}], got {k}")
    return np.argsort(-values, axis=-1, kind="stable")[..., :k]


def moe(cfg, h, weights, block, task, trace=None, prefix=""):
    """The MoE FFN of block ``block`` for task ``task`` (see the module docstring): (N, D)."""
    p = f"blocks.{block}.mlp."
    logits = h @ weights[f"{p}gate.{task}.w_gate"].astype(np.float64)
    probs = softmax(logits)
    idx = topk(probs, cfg.top_k)
    chosen = np.take_along_axis(probs, idx, axis=1)
    y = np.zeros_like(h)
    w1, b1 = weights[p + "experts.htoh4.weight"], weights[p + "experts.htoh4.bias"]
    w2, b2 = weights[p + "experts.h4toh.weight"], weights[p + "experts.h4toh.bias"]
    for e in range(cfg.num_experts):
        rows, slot = np.nonzero(idx == e)
        if len(rows):
            y[rows] += chosen[rows, slot, None] * mlp(h[rows], w1[e], b1[e], w2[e], b2[e])
    if trace is not None:
        trace.update({prefix + "gate_logits": logits, prefix + "gate_probs": probs,
                      prefix + "topk_idx": idx, prefix + "topk_probs": chosen})
    return y


def forward(cfg, weights, image, task=0, trace=False):
    """One frame: ``image`` (C, H, W) in [0, 1) -> the (N, D) token matrix after the last block.

    Returns ``out`` (float64), or ``(out, trace)`` with every named intermediate tensor.
    """
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or \
            not 0 <= task < cfg.num_tasks:
        raise ValueError(f"task must be in [0, num_tasks-1={cfg.num_tasks - 1}], got {task}")
    weights = validate_weights(weights, cfg)
    tr = {}
    x = patch_embed(cfg, weights, image)
    tr["embed"] = x
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        h = layer_norm(x, weights[p + "norm1.weight"], weights[p + "norm1.bias"], cfg.ln_eps)
        tr[p + "norm1"] = h
        x = x + attention(cfg, h, weights[p + "attn.qkv.weight"], weights[p + "attn.qkv.bias"],
                          weights[p + "attn.proj.weight"], weights[p + "attn.proj.bias"], tr, p)
        tr[p + "x_attn"] = x
        h = layer_norm(x, weights[p + "norm2.weight"], weights[p + "norm2.bias"], cfg.ln_eps)
        tr[p + "norm2"] = h
        if cfg.is_moe(b):
            y = moe(cfg, h, weights, b, task, tr, p + "mlp.")
        else:
            y = mlp(h, weights[p + "mlp.fc1.weight"], weights[p + "mlp.fc1.bias"],
                    weights[p + "mlp.fc2.weight"], weights[p + "mlp.fc2.bias"], tr, p + "mlp.")
        x = x + y
        tr[p + "mlp.out"] = y
        tr[p + "out"] = x
    return (x, tr) if trace else x


def random_image(cfg, seed=0):
    """A seeded test image (C, H, W): smooth gradients plus noise, multiples of 1/256 in [0, 1)."""
    rng = np.random.default_rng(seed)
    h, w = cfg.image_size
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    image = np.empty((cfg.in_chans, h, w))
    for c in range(cfg.in_chans):
        a, b, f = rng.uniform(-0.4, 0.4, 3)
        image[c] = 0.5 + a * yy + b * xx + 0.15 * np.sin(2 * np.pi * (f * 4 + 1) * (xx + yy))
    image += rng.normal(0, 0.05, image.shape)
    return np.clip(np.floor(image * 256), 0, 255) / 256
