"""Model inputs from files: a folder of PNG / JPEG pictures or an ``.npy`` batch.

A model input is an image of shape (C, H, W) with values in [0, 1) that are
multiples of 1/256 (what :func:`golden.int_model.pixels_from_image` turns into
uint8 pixel codes); no mean/std normalisation (the float model has none).

* **Pictures** (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.ppm``, read with Pillow, in
  name order): converted to RGB (or to grey for a 1-channel model), scaled with
  bicubic resampling so that the picture covers the model's (H, W) with its aspect
  kept, then cropped at the centre, as the M3ViT data pipeline resizes and crops its
  PASCAL / NYUD frames to the training size.
* **``.npy``** (read with ``allow_pickle=False``): one image (C, H, W) or a batch (B, C,
  H, W), either uint8 codes or floats in [0, 1).
"""

from pathlib import Path

import numpy as np

from golden.int_model import pixels_from_image

__all__ = ["PICTURE_SUFFIXES", "InputError", "load_picture", "load_inputs"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


class InputError(ValueError):
    """Input files cannot be read as model inputs; the message names the file."""


def load_picture(path, cfg):
    """One picture file as a model input for ``cfg`` (module docstring)."""
    from PIL import Image, UnidentifiedImageError
    h, w = cfg.image_size
    if cfg.in_chans not in (1, 3):
        raise InputError(f"{path}: pictures give 1 or 3 channels, model {cfg.name!r} takes "
                         f"{cfg.in_chans}; pass an .npy batch instead")
    try:
        with Image.open(path) as pic:
            pic = pic.convert("L" if cfg.in_chans == 1 else "RGB")
            scale = max(h / pic.height, w / pic.width)
            size = (max(w, round(pic.width * scale)), max(h, round(pic.height * scale)))
            pic = pic.resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - w) // 2, (size[1] - h) // 2
            pic = pic.crop((left, top, left + w, top + h))
            codes = np.asarray(pic, np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable picture ({exc})") from None
    codes = codes[None] if codes.ndim == 2 else codes.transpose(2, 0, 1)
    return codes.astype(np.float64) / 256


def _from_array(path, array, cfg):
    shape = (cfg.in_chans, *cfg.image_size)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != shape:
        raise InputError(f"{path}: shape {array.shape}, expected {shape} or (B, "
                         f"{', '.join(map(str, shape))}) for model {cfg.name!r}")
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"{path}: integer pixels must be in [0, 255]")
        return [a.astype(np.float64) / 256 for a in array]
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path}: dtype {array.dtype}, expected uint8 codes or floats")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() >= 1:
        raise InputError(f"{path}: float pixels must be finite and in [0, 1)")
    # On the 1/256 grid exactly as the hardware's pixel codes (golden.int_model).
    return [pixels_from_image(cfg, a).astype(np.float64) / 256 for a in array]


def load_inputs(source, cfg, limit=None):
    """Model inputs from ``source``: a picture, a folder of pictures or an ``.npy`` file;
    at most ``limit`` of them. Returns a list of float arrays (C, H, W)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no pictures ({', '.join(PICTURE_SUFFIXES)}) in the folder")
        images = [load_picture(p, cfg) for p in files[:limit]]
    elif path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a numeric .npy array ({exc})") from None
        images = _from_array(path, array, cfg)[:limit]
    elif path.suffix.lower() in PICTURE_SUFFIXES:
        images = [load_picture(path, cfg)]
    else:
        raise InputError(f"{path}: expected a picture ({', '.join(PICTURE_SUFFIXES)}), a folder "
                         f"of them or an .npy batch")
    if not images:
        raise InputError(f"{path}: no images (limit {limit})")
    return images
