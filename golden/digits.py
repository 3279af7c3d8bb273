"""The trained MoE-ViT of the quantization study: scikit-learn's digits, its split, its config.

scikit-learn ships the UCI optical digits (1,797 gray 8x8 images, values 0..16,
10 classes) inside the wheel, so the data needs no download. This module fixes
everything the accuracy figures depend on:

* pixels: ``code = round_half_up(v * 255 / 16)``, image ``= code / 256`` (the
  integer model's pixel format, :func:`golden.int_model.pixels_from_image`);
* the split: one seeded permutation (:data:`SPLIT_SEED`) of all images; the last
  :data:`TEST_SIZE` are the held-out test split (never used for training,
  calibration or any choice), the others train; the calibration set is the first
  :data:`CALIBRATION_SIZE` of the training images (post-training quantization sees
  training data only, as in CoQMoE / RepQ-ViT);
* the model: :func:`config` (a 4-block MoE-ViT with MoE at blocks 1 and 3) and its
  trained float weights :data:`WEIGHTS` (``examples/train_digits.py`` wrote them;
  the recipe is stored in the file and in ``docs/quantization.md``).
"""

from pathlib import Path

import numpy as np

from .config import ModelConfig
from .quant import round_half_up
from .weights import load_npz

__all__ = ["SPLIT_SEED", "TEST_SIZE", "CALIBRATION_SIZE", "WEIGHTS", "config", "load_split",
           "load_weights"]

SPLIT_SEED = 20261124
TEST_SIZE = 597
CALIBRATION_SIZE = 128
#: The trained float weights (a validated ``golden.weights`` ``.npz``).
WEIGHTS = Path(__file__).resolve().parent / "models" / "digits_moevit.npz"


def config():
    """The digits MoE-ViT: 1x8x8 in 2x2 patches (16 + 1 tokens), D 48, 3 heads of 16,
    4 blocks (MoE at 1 and 3: 4 experts of hidden 96, top-2, one task), dense FFN 96,
    10 classes."""
    return ModelConfig(name="digits_moevit", image_size=(8, 8), in_chans=1, patch_size=2,
                       embed_dim=48, num_heads=3, depth=4, mlp_ratio=2, moe_blocks=(1, 3),
                       num_experts=4, top_k=2, expert_hidden=96, num_tasks=1, num_classes=10)


def load_split(part):
    """Images and labels of one part of the split.

    Parameters
    ----------
    part : str
        ``"train"``, ``"calibration"`` (a subset of train) or ``"test"``.

    Returns
    -------
    images : numpy.ndarray of float64, shape (n, 1, 8, 8)
        Multiples of 1/256 in [0, 1).
    labels : numpy.ndarray of int64, shape (n,)
    """
    from sklearn.datasets import load_digits

    if part not in ("train", "calibration", "test"):
        raise ValueError(f"part must be 'train', 'calibration' or 'test', got {part!r}")
    data = load_digits()
    codes = np.clip(round_half_up(data.images * (255 / 16)), 0, 255)
    images = (codes / 256)[:, None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    train, test = order[:-TEST_SIZE], order[-TEST_SIZE:]
    pick = {"train": train, "calibration": train[:CALIBRATION_SIZE], "test": test}[part]
    return images[pick], data.target[pick].astype(np.int64)


def load_weights():
    """The trained float weights for :func:`config` (validated)."""
    return load_npz(WEIGHTS, config())
