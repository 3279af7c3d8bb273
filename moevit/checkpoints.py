"""Float weight sets from the formats users have: Edge-MoE folders, PyTorch checkpoints, ``.npz``.

Every reader returns the project's validated weight set
(:func:`golden.weights.validate_weights`: the M3ViT backbone ``state_dict`` names of
:func:`golden.weights.param_shapes`, float32) or raises :class:`CheckpointError`
with one line naming the file or tensor and what was expected. No reader unpickles
anything it was not asked to: ``.npz`` files are read with ``allow_pickle=False``,
PyTorch files with ``torch.load(weights_only=True)``.

**Edge-MoE folder** (``sharc-lab/Edge-MoE``, ``testbench/e2e.cpp`` and
``weights/scripts/prepare_for_onboard.py``): one headerless file of little-endian
float32 per tensor, C order, named ``<name>.float32.bin``:

============================================  ======================  ===========================
file                                          shape                   project tensor
============================================  ======================  ===========================
``patch_embed_weight`` / ``_bias``            (D, C, p, p) / (D,)     ``patch_embed.proj.*``
``pos_embed``                                 (N, D)                  ``pos_embed`` with
                                                                      ``cls_token`` added to row 0
``l{L}_norm1_weight`` ... ``_norm2_bias``     (D,)                    ``blocks.L.norm1/2.*``
``l{L}_qkv_weight`` / ``_bias``               (3D, D) / (3D,)         ``blocks.L.attn.qkv.*``
``l{L}_attn_proj_weight`` / ``_bias``         (D, D) / (D,)           ``blocks.L.attn.proj.*``
``l{L}_fc1_weight`` ... ``_fc2_bias``         [out][in]               dense ``blocks.L.mlp.fc*``
``l{L}_w_gate_T_task{t}``                     (E, D): transposed      ``blocks.L.mlp.gate.t.w_gate``
``l{L}_htoh4_weight`` / ``_bias``             (E, He, D) / (E, He)    ``...experts.htoh4.*``
``l{L}_h4toh_weight`` / ``_bias``             (E, D, He) / (E, D)     ``...experts.h4toh.*``
============================================  ======================  ===========================

Edge-MoE has no ``cls_token`` file: the class token is folded into ``pos_embed``
row 0 (``src/conv.cpp`` writes ``pos_embed[0]`` as token 0). Reading sets
``cls_token`` to zero, which gives the same model; writing folds it in. The folder's
other files (``image.float32.bin``, reference outputs ``l*_x_post_*``, scripts) are
not weights and are skipped; any other ``.float32.bin`` is an unexpected tensor.

**PyTorch** (VITA-Group's M3ViT): a ``state_dict`` or a checkpoint dict holding one
under ``state_dict`` / ``model``, in a ``.pt`` / ``.pth`` file (needs torch) or a
``.safetensors`` file (needs only the ``safetensors`` package). The backbone prefix
(``module.backbone.`` in M3ViT's multi-task checkpoints) is found from the key that
ends in ``patch_embed.proj.weight`` or given. M3ViT's expert-parallel training
saves a *folder* (``checkpoint.pth.tar/``) of ``<rank>.pth`` files whose experts are
split over the ranks: the expert tensors are concatenated in rank order.
"""

import re
from pathlib import Path

import numpy as np

from golden.config import ModelConfig
from golden.weights import WeightError, load_npz, param_shapes, validate_weights

__all__ = ["CheckpointError", "FORMATS", "detect_format", "read_weights", "read_edge_moe",
           "write_edge_moe", "read_torch", "write_safetensors", "find_prefix"]

#: Source formats of :func:`read_weights`.
FORMATS = ("edge-moe", "torch", "safetensors", "npz")

_SUFFIX = ".float32.bin"
#: Files of an Edge-MoE folder that are not weights: the test image, reference activations.
_NOT_WEIGHTS = re.compile(r"^(image|l\d+_x_(pre|post)_\w+)$")


class CheckpointError(ValueError):
    """A weight source cannot be read; the message names the file or tensor."""


def detect_format(source):
    """The format of ``source`` from its name and contents (:data:`FORMATS`)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob(f"*{_SUFFIX}")):
            return "edge-moe"
        if any(path.glob("*.pth")):
            return "torch"
        raise CheckpointError(f"{path}: a folder with neither Edge-MoE '*{_SUFFIX}' files "
                              f"nor M3ViT rank files '<rank>.pth'")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".tar", ".bin", ".ckpt"):
        return "torch"
    raise CheckpointError(f"{path}: unknown weight format (expected an Edge-MoE folder, "
                          f".pt/.pth, .safetensors or .npz)")


def read_weights(source, cfg, fmt=None, prefix=None):
    """Read a float weight set for ``cfg`` (a :class:`~golden.config.ModelConfig`) from
    ``source`` in ``fmt`` (default: :func:`detect_format`); ``prefix``: the backbone's key
    prefix of a PyTorch checkpoint (default: found)."""
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise CheckpointError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "edge-moe":
        return read_edge_moe(source, cfg)
    if fmt == "npz":
        return _read_npz(source, cfg)
    return read_torch(source, cfg, prefix=prefix)


def _read_npz(path, cfg):
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return load_npz(path, cfg)
    except ValueError as exc:
        text = str(exc)
        raise CheckpointError(text if text.startswith(str(path)) else f"{path}: {text}") from None


# ------------------------------------------------------------------------ Edge-MoE folder

def _edge_moe_names(cfg):
    """``{file stem: (project name, transposed)}`` of every weight file of ``cfg``."""
    if cfg.num_classes:
        raise CheckpointError(f"the Edge-MoE format holds a backbone only; model "
                              f"{cfg.name!r} has num_classes={cfg.num_classes} (expected 0)")
    names = {"patch_embed_weight": ("patch_embed.proj.weight", False),
             "patch_embed_bias": ("patch_embed.proj.bias", False),
             "pos_embed": ("pos_embed", False)}
    for b in range(cfg.depth):
        q = f"blocks.{b}."
        pairs = {"norm1": "norm1", "norm2": "norm2", "qkv": "attn.qkv", "attn_proj": "attn.proj"}
        if cfg.is_moe(b):
            pairs.update({"htoh4": "mlp.experts.htoh4", "h4toh": "mlp.experts.h4toh"})
            for t in range(cfg.num_tasks):
                names[f"l{b}_w_gate_T_task{t}"] = (q + f"mlp.gate.{t}.w_gate", True)
        else:
            pairs.update({"fc1": "mlp.fc1", "fc2": "mlp.fc2"})
        for stem, name in pairs.items():
            for part in ("weight", "bias"):
                names[f"l{b}_{stem}_{part}"] = (f"{q}{name}.{part}", False)
    return names


def read_edge_moe(folder, cfg):
    """Read an Edge-MoE ``weights/`` folder (module docstring) for ``cfg``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    names = _edge_moe_names(cfg)
    shapes = param_shapes(cfg)
    for path in sorted(folder.glob(f"*{_SUFFIX}")):
        stem = path.name[:-len(_SUFFIX)]
        if stem not in names and not _NOT_WEIGHTS.match(stem):
            raise CheckpointError(f"{path}: unexpected tensor file for model {cfg.name!r}")
    weights = {}
    for stem, (name, transposed) in names.items():
        path = folder / (stem + _SUFFIX)
        if not path.is_file():
            raise CheckpointError(f"{path}: missing tensor file (tensor {name!r})")
        shape = shapes[name]
        if name == "pos_embed":
            shape = shape[1:]
        if transposed:
            shape = shape[::-1]
        count = int(np.prod(shape))
        size = path.stat().st_size
        if size != 4 * count:
            raise CheckpointError(f"{path}: {size} bytes, expected {4 * count} "
                                  f"({count} float32 of shape {shape})")
        value = np.fromfile(path, "<f4").reshape(shape)
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: holds NaN or inf")
        weights[name] = value.T if transposed else value
    weights["pos_embed"] = weights["pos_embed"][None]
    weights["cls_token"] = np.zeros(shapes["cls_token"], np.float32)
    return _validated(weights, cfg, folder)


def write_edge_moe(folder, weights, cfg):
    """Write ``weights`` as an Edge-MoE folder (``cls_token`` folded into ``pos_embed`` row
    0); returns the list of files written."""
    weights = _validated(weights, cfg, "weights")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, (name, transposed) in _edge_moe_names(cfg).items():
        value = weights[name]
        if name == "pos_embed":
            value = value[0].copy()
            value[0] += weights["cls_token"][0, 0]
        if transposed:
            value = value.T
        path = folder / (stem + _SUFFIX)
        np.ascontiguousarray(value, "<f4").tofile(path)
        written.append(path)
    return written


# ------------------------------------------------------------------------ PyTorch / safetensors

def find_prefix(keys, source="checkpoint"):
    """The backbone prefix: what precedes ``patch_embed.proj.weight`` in ``keys``."""
    anchor = "patch_embed.proj.weight"
    found = sorted({k[:-len(anchor)] for k in keys if k.endswith(anchor)})
    if not found:
        raise CheckpointError(f"{source}: no tensor named '...{anchor}' (not an M3ViT backbone?)")
    if len(found) > 1:
        raise CheckpointError(f"{source}: several backbones ({', '.join(repr(p) for p in found)}); "
                              f"choose one with --prefix")
    return found[0]


def _torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading .pt/.pth checkpoints needs torch (pip install torch), or "
                              "convert the checkpoint to .safetensors") from None
    return torch


def _torch_state(path):
    torch = _torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:    # torch raises many types for a bad file; one line for all
        raise CheckpointError(f"{path}: not a readable PyTorch file "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a state_dict")
    out = {}
    for k, v in state.items():
        try:
            if hasattr(v, "detach"):            # float16 / bfloat16 read as float32
                v = v.detach().cpu()
                v = (v.float() if v.is_floating_point() else v).numpy()
            out[k] = v
        except (TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: tensor {k!r} cannot be read as float32 "
                                  f"({exc})") from None
    return out


def _rank_folder(folder):
    """M3ViT's expert-parallel checkpoint: ``0.pth`` has every tensor, the other ranks
    their share of the experts; experts are concatenated in rank order."""
    ranks = sorted((p for p in folder.glob("*.pth") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not ranks or [int(p.stem) for p in ranks] != list(range(len(ranks))):
        raise CheckpointError(f"{folder}: expected rank files 0.pth, 1.pth, ... with no gaps")
    state = _torch_state(ranks[0])
    for path in ranks[1:]:
        for key, value in _torch_state(path).items():
            if ".mlp.experts." not in key or key not in state:
                raise CheckpointError(f"{path}: tensor {key!r} is not an expert tensor of 0.pth")
            state[key] = np.concatenate([state[key], value], axis=0)
    return state


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from None


def read_torch(source, cfg, prefix=None):
    """Read the backbone of a PyTorch M3ViT checkpoint (module docstring)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        state = _rank_folder(path)
    elif path.suffix.lower() == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _torch_state(path)
    if prefix is None:
        prefix = find_prefix(state, str(path))
    shapes = param_shapes(cfg)
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    for name in inside:
        if name not in shapes:
            raise CheckpointError(f"{path}: unexpected tensor {prefix + name!r} for model "
                                  f"{cfg.name!r}")
    for name in shapes:
        if name not in inside:
            raise CheckpointError(f"{path}: missing tensor {prefix + name!r}")
    return _validated(inside, cfg, path)


def write_safetensors(path, weights, cfg, prefix=""):
    """Write ``weights`` (validated for ``cfg``) as ``.safetensors`` under ``prefix``."""
    from safetensors.numpy import save_file
    weights = _validated(weights, cfg, "weights")
    save_file({prefix + k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path))


def _validated(weights, cfg, source):
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    try:
        return validate_weights(weights, cfg)
    except WeightError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
