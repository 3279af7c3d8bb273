"""Model configuration of the M3ViT family: one frozen, validated, JSON-serializable dataclass.

:class:`ModelConfig` is the single source of truth for every shape in ``golden/``
(weights, float and integer forwards). Its defaults are M3ViT-tiny exactly as the
reference hardware (Edge-MoE, UbiMoE) runs it; :data:`PRESETS` names the sizes the
project uses.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["ModelConfig", "m3vit_tiny", "m3vit_small", "tiny_test", "PRESETS", "preset", "parse_json",
           "load_json_file"]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_tuple(name, value, what):
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def _check(name, value, lo, hi):
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def parse_json(text):
    """``json.loads`` whose error says the text is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None


def load_json_file(path, from_json):
    """``from_json`` of the file at ``path``; every error names the file."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    try:
        return from_json(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class ModelConfig:
    """An M3ViT-style MoE Vision Transformer (defaults: M3ViT-tiny).

    Every field is checked in ``__post_init__``; a bad value raises ``ValueError``
    naming the field and its allowed range. Sequences are stored as tuples, so a
    config read back from JSON compares equal to the original.

    Parameters
    ----------
    name : str
        Non-empty label (``"m3vit_tiny"``).
    image_size : tuple of int, (H, W)
        Input image size, each in [1, 8192] and a multiple of ``patch_size``.
    in_chans : int
        Image channels C, in [1, 64].
    patch_size : int
        Side p of the square, non-overlapping patches (conv stride = size), in
        [1, 256]. Patches are numbered row-major (y, x).
    embed_dim : int
        Token width D, in [1, 4096], a multiple of ``num_heads``.
    num_heads : int
        Attention heads, in [1, D], dividing D.
    depth : int
        Number of pre-norm blocks, in [1, 64].
    mlp_ratio : int
        Dense FFN hidden width is ``mlp_ratio * embed_dim``; in [1, 16].
    moe_blocks : tuple of int
        Blocks whose FFN is a mixture of experts (the others are dense); distinct
        entries in [0, depth-1], stored sorted.
    num_experts : int
        Experts E per MoE block, in [1, 64].
    top_k : int
        Experts per token, in [1, min(num_experts, 4)] (the gating datapath keeps
        at most 4 sorted registers, ``golden.moe.TOPK_MAX``).
    expert_hidden : int
        Expert FFN hidden width, in [1, 16384].
    num_tasks : int
        Tasks, in [1, 16]; every MoE block has one gate per task.
    ln_eps : float
        LayerNorm epsilon, in (0, 1).
    num_classes : int
        Classes of the classification head, in [0, 4096]. 0 (M3ViT, a backbone): no
        head, the model ends at the last block. Otherwise a final LayerNorm ``norm``
        and a linear ``head`` read the class token (row 0) and give the logits.
    """

    name: str = "m3vit_tiny"
    image_size: tuple[int, int] = (128, 256)
    in_chans: int = 3
    patch_size: int = 16
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12
    mlp_ratio: int = 4
    moe_blocks: tuple[int, ...] = (1, 3, 5, 7, 9, 11)
    num_experts: int = 16
    top_k: int = 2
    expert_hidden: int = 384
    num_tasks: int = 2
    ln_eps: float = 1e-6
    num_classes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "image_size", _as_tuple("image_size", self.image_size, "(H, W)"))
        object.__setattr__(self, "moe_blocks",
                           _as_tuple("moe_blocks", self.moe_blocks, "a sequence of block indices"))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size!r}")
        for n, v in enumerate(self.image_size):
            _check(f"image_size[{n}]", v, 1, 8192)
        _check("in_chans", self.in_chans, 1, 64)
        _check("patch_size", self.patch_size, 1, 256)
        if any(v % self.patch_size for v in self.image_size):
            raise ValueError(f"image_size {self.image_size} must be a multiple of "
                             f"patch_size {self.patch_size}")
        _check("embed_dim", self.embed_dim, 1, 4096)
        _check("num_heads", self.num_heads, 1, self.embed_dim)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads must divide embed_dim ({self.embed_dim}), "
                             f"got {self.num_heads}")
        _check("depth", self.depth, 1, 64)
        _check("mlp_ratio", self.mlp_ratio, 1, 16)
        for b in self.moe_blocks:
            if not _is_int(b) or not 0 <= b < self.depth:
                raise ValueError(f"moe_blocks entries must be in [0, depth-1={self.depth - 1}], "
                                 f"got {b!r}")
        if len(set(self.moe_blocks)) != len(self.moe_blocks):
            raise ValueError(f"moe_blocks entries must be distinct, got {self.moe_blocks}")
        object.__setattr__(self, "moe_blocks", tuple(sorted(self.moe_blocks)))
        _check("num_experts", self.num_experts, 1, 64)
        if not _is_int(self.top_k) or not 1 <= self.top_k <= min(self.num_experts, 4):
            raise ValueError(f"top_k must be in [1, min(num_experts={self.num_experts}, 4)], "
                             f"got {self.top_k!r}")
        _check("expert_hidden", self.expert_hidden, 1, 16384)
        _check("num_tasks", self.num_tasks, 1, 16)
        if isinstance(self.ln_eps, bool) or not isinstance(self.ln_eps, (int, float)) \
                or not 0 < self.ln_eps < 1:
            raise ValueError(f"ln_eps must be in (0, 1), got {self.ln_eps!r}")
        _check("num_classes", self.num_classes, 0, 4096)

    @property
    def grid(self):
        """tuple of int: the patch grid ``(H // p, W // p)``, rows then columns."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self):
        """int: patches per image, ``grid[0] * grid[1]``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self):
        """int: tokens N, the patches plus the class token (row 0)."""
        return self.num_patches + 1

    @property
    def head_dim(self):
        """int: channels per attention head, ``embed_dim // num_heads``."""
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self):
        """int: dense FFN hidden width, ``mlp_ratio * embed_dim``."""
        return self.mlp_ratio * self.embed_dim

    @property
    def patch_dim(self):
        """int: features of one flattened patch, ``in_chans * p * p``."""
        return self.in_chans * self.patch_size * self.patch_size

    def is_moe(self, block):
        """Whether block ``block`` (0-based) has a mixture-of-experts FFN.

        Parameters
        ----------
        block : int

        Returns
        -------
        bool
        """
        return block in self.moe_blocks

    def to_dict(self):
        """The fields as a JSON-ready dict (tuples become lists).

        Returns
        -------
        dict
        """
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["moe_blocks"] = list(self.moe_blocks)
        return d

    def to_json(self):
        """The fields as a JSON object with sorted keys.

        Returns
        -------
        str
        """
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """Build a config from a dict of fields; missing fields take the defaults.

        Parameters
        ----------
        d : mapping of str to value

        Returns
        -------
        ModelConfig

        Raises
        ------
        ValueError
            If a key is not a field (``unknown ModelConfig field 'heads'``) or a value
            is out of range.
        """
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown ModelConfig field {key!r}")
        return cls(**d)

    @classmethod
    def from_json(cls, text):
        """Inverse of :meth:`to_json` (same checks as :meth:`from_dict`).

        Parameters
        ----------
        text : str

        Returns
        -------
        ModelConfig
        """
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path):
        """Read a :meth:`to_json` file; every error names the file."""
        return load_json_file(path, cls.from_json)


def m3vit_tiny():
    """M3ViT-tiny as Edge-MoE / UbiMoE run it.

    3x128x256 input, 16x16 patches (8x16 grid, 129 tokens), D 192, 3 heads of 64,
    12 blocks: dense FFN 768 on even blocks, MoE on odd blocks (16 experts of hidden
    384, top-2, 2 task gates), LayerNorm eps 1e-6.
    """
    return ModelConfig()


def m3vit_small():
    """The ViT-S sized variant: D 384, 6 heads of 64, dense FFN 1536, experts of hidden 768.

    Everything else (input, patching, depth, MoE placement, experts, top-k, tasks)
    is as :func:`m3vit_tiny`.
    """
    return ModelConfig(name="m3vit_small", embed_dim=384, num_heads=6, expert_hidden=768)


def tiny_test():
    """A small config for fast tests.

    32x48 input in 16x16 patches (2x3 grid, 6 patches + cls = 7 tokens), D 32,
    2 heads, 2 blocks (block 1 is MoE: 4 experts of hidden 16, top-2, 2 tasks),
    dense FFN 64.
    """
    return ModelConfig(name="tiny_test", image_size=(32, 48), embed_dim=32, num_heads=2, depth=2,
                       mlp_ratio=2, moe_blocks=(1,), num_experts=4, top_k=2, expert_hidden=16)


#: Preset constructors by name.
PRESETS = {"m3vit_tiny": m3vit_tiny, "m3vit_small": m3vit_small, "tiny_test": tiny_test}


def preset(name):
    """A preset config by name.

    Parameters
    ----------
    name : str
        A key of :data:`PRESETS`.

    Returns
    -------
    ModelConfig

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()
