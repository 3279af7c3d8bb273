"""Float forward of the M3ViT family in numpy (float64), with a per-layer trace.

This is the reference the integer model (:mod:`golden.int_model`) is measured
against with :mod:`golden.metrics`. Semantics follow M3ViT / Edge-MoE / UbiMoE
(``docs/arithmetic.md`` and the project's model notes):

* embedding: row 0 is ``cls_token + pos_embed[0]``; row ``1 + i`` is the 16x16
  stride-16 convolution of patch ``i`` (row-major) plus its bias and ``pos_embed[1 + i]``;
* pre-norm blocks: ``x += attn(LN1(x))``, then ``x += ffn(LN2(x))``, where ``ffn`` is
  the dense MLP or the MoE of the block; M3ViT (``num_classes`` 0) has no final norm
  and no head; a classifier (``num_classes`` > 0) adds both on the class token
  (:func:`classify`);
* exact erf GELU; LayerNorm with biased variance;
* the MoE gate of task ``t`` as ``NoisyGate_VMoE`` at eval: ``logits = LN2(x) @
  w_gate[t]`` (no bias), softmax over all experts, top-k with ties to the lower expert
  id, the top-k probabilities used *without* renormalisation,
  ``y = sum_k p_k * expert_k(x)``.

Trace names (shared with :mod:`golden.int_model`), N tokens, D channels, H heads of
hd channels, F the dense FFN hidden width, E experts, k experts per token:

=====================================  ============  ====================================
name                                   shape         meaning
=====================================  ============  ====================================
``embed``                              (N, D)        block 0 input
``blocks.l.norm1``                     (N, D)        LN1 output
``blocks.l.attn.q`` / ``.k`` / ``.v``  (H, N, hd)    per-head projections
``blocks.l.attn.scores``               (H, N, N)     ``q k^T / sqrt(hd)``, before softmax
``blocks.l.attn.probs``                (H, N, N)     softmax over keys
``blocks.l.attn.out``                  (N, D)        heads concatenated, before proj
``blocks.l.attn.proj``                 (N, D)        attention branch
``blocks.l.x_attn``                    (N, D)        after the attention residual add
``blocks.l.norm2``                     (N, D)        LN2 output
``blocks.l.mlp.fc1``                   (N, F)        dense only, before GELU
``blocks.l.mlp.gelu``                  (N, F)        dense only
``blocks.l.mlp.gate_logits``           (N, E)        MoE only
``blocks.l.mlp.gate_probs``            (N, E)        MoE only, softmax over all experts
``blocks.l.mlp.topk_idx``              (N, k) int64  MoE only, descending probability
``blocks.l.mlp.topk_probs``            (N, k)        MoE only, not renormalised
``blocks.l.mlp.out``                   (N, D)        FFN / MoE branch
``blocks.l.out``                       (N, D)        block output
``norm``                               (1, D)        classifier only: final LN of row 0
``logits``                             (1, C)        classifier only: head output
=====================================  ============  ====================================

Every traced value is float64 except ``topk_idx``.

Fake quantization: :func:`forward` and :func:`classify` take ``hook(name, value) ->
value``, called on every traced activation (and on each expert's ``experts.<e>.fc1``
and ``.gelu``; not on the gate's probabilities and choices, which follow from the
hooked logits) before the model uses it; what it returns flows on. It lets a study
quantize chosen points of the float model (``bench/routing_ablation.py``) without a
second model.
"""

import math

import numpy as np

from .weights import validate_weights

__all__ = ["gelu", "layer_norm", "softmax", "patchify", "patch_embed", "attention", "mlp",
           "topk", "moe", "forward", "classify", "random_image"]

_ERF = np.frompyfunc(math.erf, 1, 1)


def _at(hook, name, value):
    return value if hook is None else hook(name, value)


def gelu(x):
    """Exact erf GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))``.

    ``erf`` is ``math.erf`` element by element (numpy has none, scipy is not a
    dependency): about 0.15 us per element.

    Parameters
    ----------
    x : array_like of float, any shape

    Returns
    -------
    numpy.ndarray of float64, shape of ``x``
    """
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.asarray(_ERF(x / math.sqrt(2.0)), dtype=np.float64))


def layer_norm(x, gamma, beta, eps):
    """LayerNorm over the last axis with the biased variance, as torch.

    Parameters
    ----------
    x : array_like of float, shape (..., D)
    gamma, beta : array_like of float, shape (D,) or broadcastable
    eps : float

    Returns
    -------
    numpy.ndarray of float64, shape of ``x``
        ``(x - mean) / sqrt(var + eps) * gamma + beta``.
    """
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x, axis=-1):
    """Max-subtracted softmax along ``axis``.

    Parameters
    ----------
    x : array_like of float
    axis : int

    Returns
    -------
    numpy.ndarray of float64, shape of ``x``
    """
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_image(cfg, image):
    image = np.asarray(image)
    expected = (cfg.in_chans, *cfg.image_size)
    if image.shape != expected:
        raise ValueError(f"image must have shape {expected}, got {image.shape}")
    return image


def _check_task(cfg, task):
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or \
            not 0 <= task < cfg.num_tasks:
        raise ValueError(f"task must be in [0, num_tasks-1={cfg.num_tasks - 1}], got {task}")


def patchify(cfg, image):
    """Cut an image into flattened patches.

    Parameters
    ----------
    cfg : ModelConfig
    image : array_like, shape (C, H, W)
        Any dtype (kept).

    Returns
    -------
    numpy.ndarray, shape (num_patches, C * p * p)
        Patches row-major over the grid (y, x); features in (c, ky, kx) order, matching
        ``patch_embed.proj.weight.reshape(D, -1)``.

    Raises
    ------
    ValueError
        ``image must have shape (3, 128, 256), got (...)``.
    """
    image = _check_image(cfg, image)
    c, (gh, gw), p = cfg.in_chans, cfg.grid, cfg.patch_size
    return image.reshape(c, gh, p, gw, p).transpose(1, 3, 0, 2, 4).reshape(gh * gw, c * p * p)


def patch_embed(cfg, weights, image):
    """Token embedding: the class row, then the patch convolution plus position embedding.

    Parameters
    ----------
    cfg : ModelConfig
    weights : dict of str to numpy.ndarray
        As :func:`golden.weights.param_shapes` (only the embedding tensors are read).
    image : array_like of float, shape (C, H, W)
        Pixels in [0, 1) (the range is not checked).

    Returns
    -------
    numpy.ndarray of float64, shape (N, D)
        ``x[0] = cls_token + pos_embed[0]``;
        ``x[1 + i] = conv(image)[i] + bias + pos_embed[1 + i]``.

    Raises
    ------
    ValueError
        On a wrong image shape, or ``image holds NaN or inf``.
    """
    image = _check_image(cfg, image)
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or inf")
    w = weights["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1).astype(np.float64)
    x = patchify(cfg, image.astype(np.float64)) @ w.T + weights["patch_embed.proj.bias"]
    pos = weights["pos_embed"][0].astype(np.float64)
    cls = weights["cls_token"][0].astype(np.float64) + pos[:1]
    return np.concatenate([cls, x + pos[1:]])


def attention(cfg, h, w_qkv, b_qkv, w_proj, b_proj, trace=None, prefix="", hook=None):
    """Multi-head self-attention (the attention branch of a block, before the residual).

    Parameters
    ----------
    cfg : ModelConfig
    h : array_like of float, shape (N, D)
        LN1 output.
    w_qkv, b_qkv : array_like of float, shapes (3D, D) and (3D,)
        Rows 0..D-1 are Q, D..2D-1 K, 2D..3D-1 V; head j owns channels
        ``j*hd .. (j+1)*hd - 1`` of each.
    w_proj, b_proj : array_like of float, shapes (D, D) and (D,)
    trace : dict, optional
        Receives ``prefix + "attn.q"``, ``.k``, ``.v``, ``.scores``, ``.probs``,
        ``.out`` and ``.proj`` (see the module docstring).
    prefix : str
        E.g. ``"blocks.3."``.
    hook : callable, optional
        Fake quantization (module docstring), called on q, k, v, scores, probs, out, proj.

    Returns
    -------
    numpy.ndarray of float64, shape (N, D)
        ``concat_j(softmax(q_j k_j^T / sqrt(hd)) v_j) @ w_proj^T + b_proj``.
    """
    h = np.asarray(h, np.float64)
    n, d, hd = h.shape[0], cfg.embed_dim, cfg.head_dim
    qkv = h @ np.asarray(w_qkv, np.float64).T + b_qkv
    q, k, v = (_at(hook, prefix + f"attn.{t}",
                   qkv[:, i * d:(i + 1) * d].reshape(n, cfg.num_heads, hd).transpose(1, 0, 2))
               for i, t in enumerate("qkv"))
    scores = _at(hook, prefix + "attn.scores", q @ k.transpose(0, 2, 1) / math.sqrt(hd))
    probs = _at(hook, prefix + "attn.probs", softmax(scores))
    out = _at(hook, prefix + "attn.out", (probs @ v).transpose(1, 0, 2).reshape(n, d))
    y = _at(hook, prefix + "attn.proj", out @ np.asarray(w_proj, np.float64).T + b_proj)
    if trace is not None:
        trace.update({prefix + "attn.q": q, prefix + "attn.k": k, prefix + "attn.v": v,
                      prefix + "attn.scores": scores, prefix + "attn.probs": probs,
                      prefix + "attn.out": out, prefix + "attn.proj": y})
    return y


def mlp(h, w1, b1, w2, b2, trace=None, prefix="", hook=None):
    """Two-layer FFN, ``fc2(gelu(fc1(h)))`` (a dense block's FFN, or one expert).

    Parameters
    ----------
    h : array_like of float, shape (M, D)
    w1, b1 : array_like of float, shapes (F, D) and (F,)
    w2, b2 : array_like of float, shapes (D, F) and (D,)
    trace : dict, optional
        Receives ``prefix + "fc1"`` (before GELU) and ``prefix + "gelu"``, both (M, F).
    prefix : str
        E.g. ``"blocks.0.mlp."``.
    hook : callable, optional
        Fake quantization (module docstring), called on ``fc1`` and ``gelu``.

    Returns
    -------
    numpy.ndarray of float64, shape (M, D)
    """
    a = _at(hook, prefix + "fc1", np.asarray(h, np.float64) @ np.asarray(w1, np.float64).T + b1)
    g = _at(hook, prefix + "gelu", gelu(a))
    if trace is not None:
        trace.update({prefix + "fc1": a, prefix + "gelu": g})
    return g @ np.asarray(w2, np.float64).T + b2


def topk(values, k):
    """Indices of the ``k`` largest values per row, largest first; ties go to the lower index.

    The tie rule is the reference hardware's strict-``>`` insertion sort; here a
    stable sort on ``-values``.

    Parameters
    ----------
    values : array_like of float or int, shape (..., E)
        Gate probabilities or logits (softmax is monotonic, so both give the same
        order up to ties).
    k : int
        In [1, E].

    Returns
    -------
    numpy.ndarray of int64, shape (..., k)

    Raises
    ------
    ValueError
        ``k must be in [1, E], got k``.
    """
    values = np.asarray(values)
    if not 1 <= k <= values.shape[-1]:
        raise ValueError(f"k must be in [1, {values.shape[-1]}], got {k}")
    return np.argsort(-values, axis=-1, kind="stable")[..., :k].astype(np.int64)


def moe(cfg, h, weights, block, task, trace=None, prefix="", hook=None):
    """The mixture-of-experts FFN of block ``block`` for task ``task``.

    ``probs = softmax(h @ w_gate[task])`` over all E experts, ``idx = topk(probs, k)``,
    ``y = sum_k probs[idx_k] * E_{idx_k}(h)`` with the probabilities not renormalised
    and ``E_e(h) = W2_e gelu(W1_e h + b1_e) + b2_e``. Computed one expert at a time
    over the tokens routed to it.

    Parameters
    ----------
    cfg : ModelConfig
    h : array_like of float, shape (N, D)
        LN2 output (the gate and the experts see the same tensor).
    weights : dict of str to numpy.ndarray
        As :func:`golden.weights.param_shapes` (only this block's MoE tensors are read).
    block : int
        A block in ``cfg.moe_blocks``.
    task : int
        In [0, num_tasks-1]; selects the gate.
    trace : dict, optional
        Receives ``prefix + "gate_logits"``, ``"gate_probs"`` (N, E), ``"topk_idx"``,
        ``"topk_probs"`` (N, k).
    prefix : str
        E.g. ``"blocks.1.mlp."``.
    hook : callable, optional
        Fake quantization (module docstring), called on the gate logits and on each
        expert's ``experts.<e>.fc1`` and ``.gelu``.

    Returns
    -------
    numpy.ndarray of float64, shape (N, D)

    Raises
    ------
    ValueError
        ``block 0 is not a MoE block`` or ``task must be in [0, num_tasks-1=1], got 2``.
    """
    if not cfg.is_moe(block):
        raise ValueError(f"block {block} is not a MoE block (moe_blocks={cfg.moe_blocks})")
    _check_task(cfg, task)
    h = np.asarray(h, np.float64)
    p = f"blocks.{block}.mlp."
    logits = _at(hook, prefix + "gate_logits", h @ weights[f"{p}gate.{task}.w_gate"].astype(np.float64))
    probs = softmax(logits)
    idx = topk(probs, cfg.top_k)
    chosen = np.take_along_axis(probs, idx, axis=1)
    y = np.zeros_like(h)
    w1, b1 = weights[p + "experts.htoh4.weight"], weights[p + "experts.htoh4.bias"]
    w2, b2 = weights[p + "experts.h4toh.weight"], weights[p + "experts.h4toh.bias"]
    for e in range(cfg.num_experts):
        rows, slot = np.nonzero(idx == e)
        if len(rows):
            y[rows] += chosen[rows, slot, None] * mlp(h[rows], w1[e], b1[e], w2[e], b2[e],
                                                     prefix=f"{prefix}experts.{e}.", hook=hook)
    if trace is not None:
        trace.update({prefix + "gate_logits": logits, prefix + "gate_probs": probs,
                      prefix + "topk_idx": idx, prefix + "topk_probs": chosen})
    return y


def forward(cfg, weights, image, task=0, trace=False, hook=None):
    """One frame: ``image`` -> the token matrix after the last block.

    Parameters
    ----------
    cfg : ModelConfig
    weights : mapping of str to array_like
        A weight set for ``cfg`` (validated with :func:`golden.weights.validate_weights`).
    image : array_like of float, shape (C, H, W)
        Pixels in [0, 1), no mean/std normalisation.
    task : int
        In [0, num_tasks-1]; selects the gate of every MoE block.
    trace : bool
        Also return every named intermediate tensor.
    hook : callable, optional
        ``hook(name, value) -> value`` on every traced activation (fake quantization,
        module docstring); the trace holds what it returned.

    Returns
    -------
    out : numpy.ndarray of float64, shape (N, D)
    trace : dict of str to numpy.ndarray
        Only when ``trace`` is true; names and shapes in the module docstring, in
        execution order.

    Raises
    ------
    ValueError
        ``task must be in [0, num_tasks-1=1], got 2``, a wrong image shape or a
        non-finite image; :class:`golden.weights.WeightError` for a bad weight set.
    """
    _check_task(cfg, task)
    weights = validate_weights(weights, cfg)
    tr = {}

    def at(name, value):
        tr[name] = value = _at(hook, name, value)
        return value

    x = at("embed", patch_embed(cfg, weights, image))
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        h = at(p + "norm1", layer_norm(x, weights[p + "norm1.weight"], weights[p + "norm1.bias"],
                                       cfg.ln_eps))
        x = at(p + "x_attn", x + attention(
            cfg, h, weights[p + "attn.qkv.weight"], weights[p + "attn.qkv.bias"],
            weights[p + "attn.proj.weight"], weights[p + "attn.proj.bias"], tr, p, hook))
        h = at(p + "norm2", layer_norm(x, weights[p + "norm2.weight"], weights[p + "norm2.bias"],
                                       cfg.ln_eps))
        if cfg.is_moe(b):
            y = moe(cfg, h, weights, b, task, tr, p + "mlp.", hook)
        else:
            y = mlp(h, weights[p + "mlp.fc1.weight"], weights[p + "mlp.fc1.bias"],
                    weights[p + "mlp.fc2.weight"], weights[p + "mlp.fc2.bias"], tr, p + "mlp.", hook)
        y = at(p + "mlp.out", y)
        x = at(p + "out", x + y)
    return (x, tr) if trace else x


def classify(cfg, weights, image, task=0, trace=False, hook=None):
    """Class logits of one image: :func:`forward`, then the final LayerNorm and the head
    on the class token (row 0).

    Parameters
    ----------
    cfg : ModelConfig
        With ``num_classes`` > 0.
    weights, image, task, trace, hook
        As :func:`forward`; the trace adds ``norm`` (1, D) and ``logits`` (1, C).

    Returns
    -------
    logits : numpy.ndarray of float64, shape (C,)
    trace : dict, only when ``trace`` is true

    Raises
    ------
    ValueError
        ``classify needs a config with num_classes > 0`` for a backbone config.
    """
    if not cfg.num_classes:
        raise ValueError("classify needs a config with num_classes > 0")
    weights = validate_weights(weights, cfg)
    x, tr = forward(cfg, weights, image, task, trace=True, hook=hook)
    h = _at(hook, "norm", layer_norm(x[:1], weights["norm.weight"], weights["norm.bias"], cfg.ln_eps))
    logits = _at(hook, "logits", h @ weights["head.weight"].T.astype(np.float64) + weights["head.bias"])
    tr["norm"], tr["logits"] = h, logits
    return (logits[0], tr) if trace else logits[0]


def random_image(cfg, seed=0):
    """A seeded test image with spatial structure, quantized like 8-bit pixels.

    Per channel a random linear gradient plus a diagonal sinusoid, plus N(0, 0.05)
    noise; clipped and floored to multiples of 1/256.

    Parameters
    ----------
    cfg : ModelConfig
    seed : int

    Returns
    -------
    numpy.ndarray of float64, shape (C, H, W)
        Values ``q / 256`` with integer ``q`` in [0, 255].
    """
    rng = np.random.default_rng(seed)
    h, w = cfg.image_size
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    image = np.empty((cfg.in_chans, h, w))
    for c in range(cfg.in_chans):
        a, b, f = rng.uniform(-0.4, 0.4, 3)
        image[c] = 0.5 + a * yy + b * xx + 0.15 * np.sin(2 * np.pi * (f * 4 + 1) * (xx + yy))
    image += rng.normal(0, 0.05, image.shape)
    return np.clip(np.floor(image * 256), 0, 255) / 256
