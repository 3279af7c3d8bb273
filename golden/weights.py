"""Float weights of the M3ViT family: torch-style names, seeded initialisation, validated ``.npz``.

A weight set is a plain ``dict[str, numpy.ndarray]`` keyed by the M3ViT backbone
``state_dict`` names (``patch_embed.proj.weight``, ``blocks.3.mlp.gate.0.w_gate``, ...);
:func:`param_shapes` lists every name and shape for a :class:`~golden.config.ModelConfig`.
Linear weights are torch-style ``[out, in]``, expert weights ``[expert, out, in]``, gate
weights ``[D, E]`` (no bias).
"""

import numpy as np

from .archive import ArchiveError, read_npz, read_string
from .config import ModelConfig

__all__ = ["WeightError", "param_shapes", "init_weights", "validate_weights", "save_npz",
           "load_npz", "from_torch_state_dict"]

#: Reserved ``.npz`` key holding the config JSON (a 0-d unicode array).
_CONFIG_KEY = "__config__"


class WeightError(ValueError):
    """A weight set does not match the model; the message names the offending tensor."""


def param_shapes(cfg):
    """Every tensor of the model: torch ``state_dict`` names and shapes, in a fixed order.

    Parameters
    ----------
    cfg : ModelConfig

    Returns
    -------
    dict of str to tuple of int
        ``patch_embed.proj.weight`` (D, C, p, p) and ``.bias`` (D,), ``cls_token``
        (1, 1, D), ``pos_embed`` (1, N, D); then per block ``l``: ``blocks.l.norm1``
        ``.weight``/``.bias`` (D,), ``attn.qkv`` (3D, D)/(3D,), ``attn.proj`` (D, D)/(D,),
        ``norm2`` (D,); dense blocks ``mlp.fc1`` (H, D)/(H,), ``mlp.fc2`` (D, H)/(D,);
        MoE blocks ``mlp.gate.t.w_gate`` (D, E) for each task t,
        ``mlp.experts.htoh4`` (E, He, D)/(E, He), ``mlp.experts.h4toh`` (E, D, He)/(E, D);
        with a classification head (``num_classes`` C > 0) ``norm.weight``/``.bias`` (D,)
        and ``head.weight`` (C, D)/``head.bias`` (C,) last.
    """
    d, n, p = cfg.embed_dim, cfg.num_tokens, cfg.patch_size
    e, he, h = cfg.num_experts, cfg.expert_hidden, cfg.mlp_hidden
    shapes = {
        "patch_embed.proj.weight": (d, cfg.in_chans, p, p),
        "patch_embed.proj.bias": (d,),
        "cls_token": (1, 1, d),
        "pos_embed": (1, n, d),
    }
    for b in range(cfg.depth):
        q = f"blocks.{b}."
        shapes.update({
            q + "norm1.weight": (d,), q + "norm1.bias": (d,),
            q + "attn.qkv.weight": (3 * d, d), q + "attn.qkv.bias": (3 * d,),
            q + "attn.proj.weight": (d, d), q + "attn.proj.bias": (d,),
            q + "norm2.weight": (d,), q + "norm2.bias": (d,),
        })
        if cfg.is_moe(b):
            for t in range(cfg.num_tasks):
                shapes[q + f"mlp.gate.{t}.w_gate"] = (d, e)
            shapes.update({
                q + "mlp.experts.htoh4.weight": (e, he, d), q + "mlp.experts.htoh4.bias": (e, he),
                q + "mlp.experts.h4toh.weight": (e, d, he), q + "mlp.experts.h4toh.bias": (e, d),
            })
        else:
            shapes.update({
                q + "mlp.fc1.weight": (h, d), q + "mlp.fc1.bias": (h,),
                q + "mlp.fc2.weight": (d, h), q + "mlp.fc2.bias": (d,),
            })
    if cfg.num_classes:
        shapes.update({"norm.weight": (d,), "norm.bias": (d,),
                       "head.weight": (cfg.num_classes, d), "head.bias": (cfg.num_classes,)})
    return shapes


def init_weights(cfg, seed=0):
    """Seeded random weights scaled like a trained ViT, so quantization sees realistic ranges.

    The choices (the integer model is calibrated and quantized from these):

    * linear weights (qkv, proj, fc1, fc2, experts) ~ N(0, 1/fan_in), so a layer keeps
      unit-ish output variance;
    * the residual branches (``attn.proj``, ``mlp.fc2``, ``experts.h4toh``) are then
      halved, so the residual stream grows gently over the blocks (std about 1.1 after
      the embedding and about 2 after block 11 of M3ViT-tiny);
    * biases ~ N(0, 0.02);
    * LayerNorm weight 1 + N(0, 0.1), bias N(0, 0.05);
    * ``cls_token`` and ``pos_embed`` ~ N(0, 0.5), so the embedding is not dominated by
      the position noise;
    * ``patch_embed.proj.weight`` ~ N(0, 1/patch_dim) times 2: pixels in [0, 1) have a
      mean square of about 0.28, so the convolution output has std about 1;
    * gate weights ~ N(0, 1/D) times 3: gate logits of std about 3, a softmax that is
      neither uniform nor one-hot (top-1 probability about 0.5-0.7 over 16 experts).

    Parameters
    ----------
    cfg : ModelConfig
    seed : int
        Seed of ``numpy.random.default_rng``; tensors are drawn in :func:`param_shapes`
        order.

    Returns
    -------
    dict of str to numpy.ndarray of float32
        Shapes as :func:`param_shapes`.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in param_shapes(cfg).items():
        fan_in = shape[-1]
        if name.endswith("w_gate"):
            w = rng.normal(0, 3 / np.sqrt(shape[0]), shape)
        elif name == "patch_embed.proj.weight":
            w = rng.normal(0, 2 / np.sqrt(cfg.patch_dim), shape)
        elif name in ("cls_token", "pos_embed"):
            w = rng.normal(0, 0.5, shape)
        elif "norm" in name and name.endswith("weight"):
            w = 1 + rng.normal(0, 0.1, shape)
        elif "norm" in name:
            w = rng.normal(0, 0.05, shape)
        elif name.endswith("bias"):
            w = rng.normal(0, 0.02, shape)
        else:
            w = rng.normal(0, 1 / np.sqrt(fan_in), shape)
            if name.endswith(("attn.proj.weight", "fc2.weight", "h4toh.weight")):
                w *= 0.5
        out[name] = w.astype(np.float32)
    return out


def validate_weights(weights, cfg):
    """Check names, shapes, dtypes and finiteness of a weight set.

    Parameters
    ----------
    weights : mapping of str to array_like
        Any floating dtype.
    cfg : ModelConfig

    Returns
    -------
    dict of str to numpy.ndarray of float32
        New arrays, in :func:`param_shapes` order.

    Raises
    ------
    WeightError
        Naming the first missing (``missing tensor 'X'``), unexpected
        (``unexpected tensor 'X'``), misshapen (``tensor 'X' has shape (..), expected
        (..)``), non-floating (``tensor 'X' has dtype int8, expected a float type``) or
        non-finite (``tensor 'X' holds NaN or inf``) tensor.
    """
    shapes = param_shapes(cfg)
    for name in shapes:
        if name not in weights:
            raise WeightError(f"missing tensor {name!r}")
    for name in weights:
        if name not in shapes:
            raise WeightError(f"unexpected tensor {name!r}")
    out = {}
    for name, shape in shapes.items():
        value = np.asarray(weights[name])
        if value.shape != shape:
            raise WeightError(f"tensor {name!r} has shape {value.shape}, expected {shape}")
        if not np.issubdtype(value.dtype, np.floating):
            raise WeightError(f"tensor {name!r} has dtype {value.dtype}, expected a float type")
        if not np.all(np.isfinite(value)):
            raise WeightError(f"tensor {name!r} holds NaN or inf")
        out[name] = value.astype(np.float32)
    return out


def save_npz(path, weights, cfg=None):
    """Write a weight set to an uncompressed ``.npz``.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; numpy appends ``.npz`` when the name lacks it.
    weights : mapping of str to array_like
        Stored as given (validate first with :func:`validate_weights` if needed).
    cfg : ModelConfig, optional
        When given, its JSON is stored under ``"__config__"`` (a 0-d unicode array) and
        :func:`load_npz` checks it.

    Raises
    ------
    WeightError
        If ``weights`` uses the reserved name ``"__config__"``.
    """
    if _CONFIG_KEY in weights:
        raise WeightError(f"tensor name {_CONFIG_KEY!r} is reserved for the config")
    extra = {} if cfg is None else {_CONFIG_KEY: np.array(cfg.to_json())}
    np.savez(path, **weights, **extra)


def load_npz(path, cfg):
    """Read and validate a weight file for ``cfg``.

    Parameters
    ----------
    path : str or os.PathLike
    cfg : ModelConfig

    Returns
    -------
    dict of str to numpy.ndarray of float32
        As :func:`validate_weights`; the ``"__config__"`` entry is not a tensor.

    Raises
    ------
    WeightError
        If the stored config (when present) differs from ``cfg``, naming each differing
        field with both values, or as :func:`validate_weights`.
    """
    try:
        stored = read_string(path, _CONFIG_KEY)
        if stored is not None:
            try:
                saved = ModelConfig.from_json(stored).to_dict()
            except ValueError as exc:
                raise WeightError(f"{path}: unreadable {_CONFIG_KEY}: {exc}") from None
            diff = [f"{k} is {saved[k]!r} in the file, {v!r} expected"
                    for k, v in cfg.to_dict().items() if saved[k] != v]
            if diff:
                raise WeightError(f"{path} was saved for another config: {'; '.join(diff)}")
        weights = read_npz(path, param_shapes(cfg), strings={_CONFIG_KEY})
    except ArchiveError as exc:
        raise WeightError(str(exc)) from None
    weights.pop(_CONFIG_KEY, None)
    return validate_weights(weights, cfg)


def from_torch_state_dict(state_dict, cfg, prefix=""):
    """Take the backbone tensors of a PyTorch M3ViT ``state_dict`` (torch is never imported).

    Parameters
    ----------
    state_dict : mapping of str to tensor or array_like
        Values with a ``detach`` method (torch tensors) are converted with
        ``.detach().cpu().numpy()``, others with ``numpy.asarray``.
    cfg : ModelConfig
    prefix : str
        Prepended to every :func:`param_shapes` name to find it (e.g. ``"backbone."``
        in a multi-task checkpoint). Every other key (decoders, heads, optimizer
        state) is ignored.

    Returns
    -------
    dict of str to numpy.ndarray of float32
        Unprefixed names, validated as :func:`validate_weights`.

    Raises
    ------
    WeightError
        ``missing tensor 'backbone.X'`` (the prefixed key), or as :func:`validate_weights`.
    """
    out = {}
    for name in param_shapes(cfg):
        key = prefix + name
        if key not in state_dict:
            raise WeightError(f"missing tensor {key!r}")
        value = state_dict[key]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[name] = np.asarray(value)
    return validate_weights(out, cfg)
