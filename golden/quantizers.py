"""Calibration quantizers of the dual-stage PTQ (CoQMoE / RepQ-ViT), and their hardware forms.

Stage one calibrates precise quantizers (``anchors.md`` section 2):

* uniform asymmetric, per tensor or per channel, with percentile clipping chosen by
  the least L2 reconstruction error (:func:`uniform_params`, :func:`search_uniform`);
* log-sqrt2 for the attention exponentials: ``x_hat = delta * 2**(-q/2)``
  (:func:`log_sqrt2_codes`, :func:`log_sqrt2_dequant`).

Stage two re-parameterises them into what the hardware runs: one scale per
tensor (:mod:`golden.reparam` folds the per-channel post-LayerNorm scales into the
LayerNorm and the next linear layers) and shift-only log2 weights
(:func:`sqrt2_to_shift`: ``2**(-q/2) = 2**(-ceil(q/2)) * sqrt(2)**(q odd)``).

Rounding is the spec's round half up (``golden.quant.round_half_up``) throughout.
"""

import numpy as np

from .quant import check_bits, round_half_up

__all__ = ["PERCENTILES", "usable_percentiles", "uniform_params", "uniform_fake_quant", "search_uniform", "search_symmetric",
           "log_sqrt2_codes", "log_sqrt2_dequant", "sqrt2_to_shift"]

#: Clipping candidates of the percentile search (CoQMoE / RepQ-ViT), plus no clipping.
PERCENTILES = (0.999, 0.9999, 0.99999, 1.0)


def usable_percentiles(samples):
    """The :data:`PERCENTILES` that clip at least one of ``samples`` values per side
    (``(1 - p) * samples >= 1``), and 1.0: a finer percentile only interpolates
    between the two largest samples, which is no clipping decision at all."""
    return tuple(p for p in PERCENTILES if p == 1.0 or (1 - p) * samples >= 1 - 1e-9)


def uniform_params(lo, hi, bits):
    """Asymmetric uniform quantizer covering ``[lo, hi]`` (arrays broadcast, per channel).

    ``scale = (hi - lo) / (2**bits - 1)``, ``zero_point = round_half_up(-lo / scale)``;
    codes are unsigned in ``[0, 2**bits - 1]``. A degenerate range gets scale 1.
    """
    check_bits("bits", bits, 2, 16)
    lo, hi = np.minimum(np.asarray(lo, np.float64), 0.0), np.maximum(np.asarray(hi, np.float64), 0.0)
    scale = np.where(hi > lo, (hi - lo) / ((1 << bits) - 1), 1.0)
    return scale, round_half_up(-lo / scale)


def uniform_fake_quant(x, scale, zero_point, bits):
    """``(clamp(round(x / scale) + z, 0, 2**bits - 1) - z) * scale`` (float64)."""
    check_bits("bits", bits, 2, 16)
    q = np.clip(round_half_up(np.asarray(x, np.float64) / scale) + zero_point, 0, (1 << bits) - 1)
    return (q - zero_point) * scale


def search_uniform(x, bits, axis=None):
    """Per tensor (``axis=None``) or per channel (``axis`` = the channel axis): the clipping
    percentile with the least squared reconstruction error, and its ``(scale, zero_point)``.

    Returns
    -------
    (scale, zero_point, percentile) : arrays over the channels (scalars per tensor)
    """
    x = np.asarray(x, np.float64)
    if axis is None:
        flat = x.reshape(1, -1)
    else:
        flat = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    best = None
    for p in usable_percentiles(flat.shape[1]):
        lo = np.quantile(flat, 1 - p, axis=1) if p < 1 else flat.min(axis=1)
        hi = np.quantile(flat, p, axis=1) if p < 1 else flat.max(axis=1)
        scale, zp = uniform_params(lo, hi, bits)
        err = ((uniform_fake_quant(flat, scale[:, None], zp[:, None], bits) - flat) ** 2).sum(axis=1)
        if best is None:
            best = [scale, zp, np.full(len(scale), p), err]
        else:
            better = err < best[3]
            for i, new in enumerate((scale, zp, np.full(len(scale), p), err)):
                best[i] = np.where(better, new, best[i])
    scale, zp, pct = best[:3]
    if axis is None:
        return float(scale[0]), int(zp[0]), float(pct[0])
    return scale, zp.astype(np.int64), pct


def search_symmetric(x, bits):
    """Per tensor, symmetric: the clipping percentile of ``|x|`` with the least squared
    reconstruction error for codes in ``[-m, m]``, ``m = 2**(bits-1) - 1``.

    Returns
    -------
    (scale, percentile) : float, float
        ``scale = clip / m`` (1 for an all-zero tensor).
    """
    check_bits("bits", bits, 2, 16)
    x = np.asarray(x, np.float64).ravel()
    a = np.abs(x)
    m = (1 << (bits - 1)) - 1
    best = None
    for p in usable_percentiles(a.size):
        clip = float(np.quantile(a, p)) if p < 1 else float(a.max(initial=0.0))
        scale = clip / m if clip > 0 else 1.0
        err = float(((np.clip(round_half_up(x / scale), -m, m) * scale - x) ** 2).sum())
        if best is None or err < best[2]:
            best = (scale, p, err)
    return best[0], best[1]


def log_sqrt2_codes(x, delta, bits):
    """log-sqrt2 codes of ``x`` in ``(0, delta]``: ``q = clamp(round_half_up(-2 log2(x / delta)), 0, 2**bits - 1)``.

    Values whose unclamped code reaches ``2**bits`` (and zeros) are quantized to zero;
    they get the code ``2**bits`` (one past the range) so :func:`log_sqrt2_dequant`
    knows them.
    """
    check_bits("bits", bits, 2, 16)
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore"):
        raw = round_half_up(np.where(x > 0, -2 * np.log2(np.maximum(x, 1e-300) / delta), np.inf)
                            .clip(-1, 1 << 20))
    return np.where(raw >= (1 << bits), 1 << bits, np.maximum(raw, 0))


def log_sqrt2_dequant(codes, delta, bits):
    """``delta * 2**(-q/2)``, 0 for the zero code ``2**bits``."""
    codes = np.asarray(codes)
    return np.where(codes >= (1 << bits), 0.0, delta * 2.0 ** (-codes / 2))


def sqrt2_to_shift(codes, bits):
    """The hardware form of log-sqrt2 codes: ``(shift, odd)`` with
    ``2**(-q/2) = 2**(-shift) * (sqrt(2) if odd else 1)``, ``shift = ceil(q/2)``.

    P.V then shifts ``v`` by ``shift`` into one of two accumulators (odd / even codes)
    and multiplies the odd one by sqrt(2) once per output. Zero codes give shift
    ``-1`` (no contribution).
    """
    codes = np.asarray(codes, np.int64)
    shift = np.where(codes >= (1 << bits), -1, -(-codes // 2))
    return shift, (codes % 2 == 1) & (codes < (1 << bits))

