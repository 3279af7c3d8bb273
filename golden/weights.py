"""Float weights of the M3ViT family: torch-style names, seeded initialisation, validated ``.npz``."""

import numpy as np

from .config import ModelConfig

__all__ = ["WeightError", "param_shapes", "init_weights", "validate_weights", "save_npz",
           "load_npz", "from_torch_state_dict"]

_CONFIG_KEY = "__config__"


class WeightError(ValueError):
    """A weight set does not match the model: names the offending tensor."""


def param_shapes(cfg):
    """Every tensor of the model, torch ``state_dict`` names and shapes, in a fixed order."""
    d, n, e, he, h = cfg.embed_dim, cfg.num_tokens, cfg.num_experts, cfg.expert_hidden, cfg.mlp_hidden
    p = cfg.patch_size
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
    return shapes


def init_weights(cfg, seed=0):
    """Random weights scaled like a trained ViT, so that quantization sees realistic ranges.

    Linear weights ~ N(0, 1/fan_in) (unit-variance outputs); the residual branches
    (attn.proj, fc2, experts' h4toh) are halved so the residual stream grows gently
    over the blocks; biases ~ N(0, 0.02); LayerNorm weight 1 + N(0, 0.1) and bias
    N(0, 0.05); cls token and position embedding N(0, 0.5); the patch embedding
    N(0, 1/patch_dim) times 2 (pixels in [0, 1) have a small spread); gate weights
    N(0, 1/D) times 3 so that the gate softmax is neither uniform nor one-hot.
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
        elif "norm" in name:
            w = 1 + rng.normal(0, 0.1, shape) if name.endswith("weight") else rng.normal(0, 0.05, shape)
        elif name.endswith("bias"):
            w = rng.normal(0, 0.02, shape)
        else:
            w = rng.normal(0, 1 / np.sqrt(fan_in), shape)
            if name.endswith(("attn.proj.weight", "fc2.weight", "h4toh.weight")):
                w *= 0.5
        out[name] = w.astype(np.float32)
    return out


def validate_weights(weights, cfg):
    """Check names, shapes, dtypes and finiteness; return float32 copies in ``param_shapes`` order.

    Raises
    ------
    WeightError
        Naming the first missing, unexpected, misshapen, non-float or non-finite tensor.
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
    """Write ``weights`` to ``path`` (``.npz``), with the config JSON when ``cfg`` is given."""
    extra = {} if cfg is None else {_CONFIG_KEY: np.array(cfg.to_json())}
    np.savez(path, **weights, **extra)


def load_npz(path, cfg):
    """Read and validate a weight file for ``cfg`` (and check its stored config, if any)."""
    with np.load(path, allow_pickle=False) as f:
        weights = {k: f[k] for k in f.files}
    stored = weights.pop(_CONFIG_KEY, None)
    if stored is not None:
        saved = ModelConfig.from_json(str(stored))
        if saved != cfg:
            diff = [k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v]
            raise WeightError(f"{path} was saved for another config: {', '.join(diff)} differ")
    return validate_weights(weights, cfg)


def from_torch_state_dict(state_dict, cfg, prefix=""):
    """Take the backbone tensors of a PyTorch M3ViT ``state_dict`` (torch itself not needed).

    ``prefix`` (e.g. ``"backbone."``) is stripped; keys outside the backbone (decoders,
    heads, optimizer state) are ignored; values may be torch tensors or arrays.
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
