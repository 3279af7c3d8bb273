"""Model configuration of the M3ViT family: one frozen, validated, JSON-serializable dataclass."""

import json
from dataclasses import asdict, dataclass, fields

__all__ = ["ModelConfig", "m3vit_tiny", "m3vit_small", "tiny_test", "PRESETS", "preset"]


def _check(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """An M3ViT-style MoE Vision Transformer (defaults: M3ViT-tiny as ``docs``/model.md fix it).

    Parameters
    ----------
    name : str
    image_size : (H, W)
        Input image size; both multiples of ``patch_size``.
    in_chans : int
    patch_size : int
        Square patches, stride = size; patches are numbered row-major.
    embed_dim : int
        D, a multiple of ``num_heads``.
    num_heads : int
    depth : int
        Number of pre-norm blocks.
    mlp_ratio : int
        Dense FFN hidden = ``mlp_ratio * embed_dim``.
    moe_blocks : tuple of int
        Blocks whose FFN is a mixture of experts (the others are dense).
    num_experts, top_k, expert_hidden : int
        Experts per MoE block, experts per token (1..4), expert FFN hidden width.
    num_tasks : int
        One gate per task in every MoE block.
    ln_eps : float
        LayerNorm epsilon.
    """

    name: str = "m3vit_tiny"
    image_size: tuple = (128, 256)
    in_chans: int = 3
    patch_size: int = 16
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12
    mlp_ratio: int = 4
    moe_blocks: tuple = (1, 3, 5, 7, 9, 11)
    num_experts: int = 16
    top_k: int = 2
    expert_hidden: int = 384
    num_tasks: int = 2
    ln_eps: float = 1e-6

    def __post_init__(self):
        object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "moe_blocks", tuple(sorted(set(self.moe_blocks))))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size!r}")
        for n, v in zip(("image_size[0]", "image_size[1]"), self.image_size):
            _check(n, v, 1, 8192)
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
            if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < self.depth:
                raise ValueError(f"moe_blocks entries must be in [0, depth-1={self.depth - 1}], "
                                 f"got {b!r}")
        _check("num_experts", self.num_experts, 1, 64)
        if not 1 <= self.top_k <= min(self.num_experts, 4) or isinstance(self.top_k, bool):
            raise ValueError(f"top_k must be in [1, min(num_experts={self.num_experts}, 4)], "
                             f"got {self.top_k!r}")
        _check("expert_hidden", self.expert_hidden, 1, 16384)
        _check("num_tasks", self.num_tasks, 1, 16)
        if not isinstance(self.ln_eps, (int, float)) or not 0 < self.ln_eps < 1:
            raise ValueError(f"ln_eps must be in (0, 1), got {self.ln_eps!r}")

    @property
    def grid(self):
        """Patch grid ``(rows, cols)``."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self):
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self):
        """Patches plus the class token (row 0)."""
        return self.num_patches + 1

    @property
    def head_dim(self):
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self):
        return self.mlp_ratio * self.embed_dim

    @property
    def patch_dim(self):
        """Features of one flattened patch, ``C * p * p``."""
        return self.in_chans * self.patch_size * self.patch_size

    def is_moe(self, block):
        """Whether block ``block`` has a mixture-of-experts FFN."""
        return block in self.moe_blocks

    def to_dict(self):
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["moe_blocks"] = list(self.moe_blocks)
        return d

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown ModelConfig field {key!r}")
        return cls(**d)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def m3vit_tiny():
    """M3ViT-tiny as Edge-MoE / UbiMoE run it: 3x128x256, 129 tokens, D 192, 16 experts, top-2."""
    return ModelConfig()


def m3vit_small():
    """The ViT-S sized variant: D 384, 6 heads of 64, dense MLP 1536, experts of hidden 768."""
    return ModelConfig(name="m3vit_small", embed_dim=384, num_heads=6, expert_hidden=768)


def tiny_test():
    """A small config for fast tests: 7 tokens, D 32, 2 blocks (the second MoE, 4 experts)."""
    return ModelConfig(name="tiny_test", image_size=(32, 48), embed_dim=32, num_heads=2, depth=2,
                       mlp_ratio=2, moe_blocks=(1,), num_experts=4, top_k=2, expert_hidden=16)


PRESETS = {"m3vit_tiny": m3vit_tiny, "m3vit_small": m3vit_small, "tiny_test": tiny_test}


def preset(name):
    """A preset config by name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()
