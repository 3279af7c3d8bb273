"""Integer LayerNorm: one pass of sum and sum of squares, exact integer square root, int8 out.

The input is the int16 residual stream (one scale for the whole tensor). The scale
cancels in the normalisation, so only the affine parameters know about scales:

::

    S1 = sum(x)                       |S1| <= D * 2**15
    S2 = sum(x * x)                   S2  <= D * 2**30
    var = D * S2 - S1 * S1            = D**2 * variance  (>= 0, < 2**51 for D <= 1024)
    c_i = D * x_i - S1                = D * (x_i - mean), |c_i| <= D * 2**16
    den = isqrt(var + eps)            exact floor square root (digit recurrence in hardware)
    (rec, k) = normalized_reciprocal(den)          rec in [2**15, 2**16]
    z_i = sat16(round_shift(c_i * rec, k + 15 - NORM_FRAC))      (x_i - mean) / std in Q5.10
    y_i = sat8(round_shift(z_i * gain_i + bias_i, shift))

``gain`` (int16) and ``bias`` (int32, including the output zero point) are the
LayerNorm affine re-parameterised for the output tensor's single scale;
:func:`affine_params` computes them. ``eps`` is the LayerNorm epsilon in the
integer variance's units (``eps_real * D**2 / scale_in**2``, at least 1).
"""

import math

import numpy as np

from .quant import check_bits, int_dtype, int_range, round_half_up, round_shift
from .softmax import RECIP_BITS, normalized_reciprocal

__all__ = ["NORM_FRAC", "GAIN_BITS", "D_MAX", "int_layernorm", "affine_params", "eps_int"]

#: Fraction bits of the normalised value z (Q5.10: |z| <= sqrt(D - 1) < 32).
NORM_FRAC = 10
#: The affine gain is a signed 16-bit integer.
GAIN_BITS = 16
#: Largest supported row length (keeps z within int16 and var below 2**51).
D_MAX = 1024


def _isqrt(v):
    # Exact floor square root of non-negative int64 values below 2**53 (float seed + fix-up).
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r -= (r * r > v)
    r += ((r + 1) * (r + 1) <= v)
    return r


def int_layernorm(x, gain, bias, shift, eps, bits=8):
    """LayerNorm of int16 rows to int8, exactly as in the module docstring.

    Parameters
    ----------
    x : int array, shape (M, D)
        int16 residual-stream codes, ``1 <= D <= D_MAX``.
    gain : int array, shape (D,)
        int16 affine gain.
    bias : int array, shape (D,)
        int32 affine bias (already holds the output zero point).
    shift : int
        Right shift of the affine result, in ``[0, 46]``.
    eps : int
        Epsilon in integer variance units, in ``[1, 2**40]``.
    bits : int
        Output width in [2, 16] (the last clamp): 8 for the MAC array, below 8 emulates
        narrower activations; wider outputs (with ``shift`` lowered by the extra bits)
        serve precision studies such as a 16-bit gate input.

    Returns
    -------
    numpy.ndarray of int8 (int16 above 8 bits), shape (M, D)
    """
    x = np.asarray(x)
    if x.ndim != 2 or not 1 <= x.shape[1] <= D_MAX:
        raise ValueError(f"x must have shape (M, D) with D in [1, {D_MAX}], got {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x must be an integer array, not {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < -32768 or x.max() > 32767):
        raise ValueError(f"x must hold int16 values, found [{int(x.min())}, {int(x.max())}]")
    gain = np.asarray(gain, np.int64)
    bias = np.asarray(bias, np.int64)
    d = x.shape[1]
    if gain.shape != (d,) or bias.shape != (d,):
        raise ValueError(f"gain and bias must have shape ({d},), got {gain.shape} and {bias.shape}")
    if gain.min() < -32768 or gain.max() > 32767:
        raise ValueError(f"gain must hold int16 values, found [{int(gain.min())}, {int(gain.max())}]")
    if bias.min() < -(1 << 31) or bias.max() >= 1 << 31:
        raise ValueError("bias must hold int32 values")
    if not 0 <= shift <= 46:
        raise ValueError(f"shift must be in [0, 46], got {shift}")
    if not 1 <= eps <= 1 << 40:
        raise ValueError(f"eps must be in [1, 2**40], got {eps}")
    check_bits("bits", bits, 2, 16)
    s1 = x.sum(axis=1, keepdims=True)
    s2 = (x * x).sum(axis=1, keepdims=True)
    var = d * s2 - s1 * s1
    c = d * x - s1
    rec, k = normalized_reciprocal(_isqrt(var + eps))
    z = np.clip(round_shift(c * rec, k + RECIP_BITS - NORM_FRAC), -32768, 32767)
    lo, hi = int_range(bits)
    return np.clip(round_shift(z * gain + bias, shift), lo, hi).astype(int_dtype(bits))


def eps_int(eps, d, scale_in):
    """LayerNorm epsilon in the integer variance's units: ``max(1, round(eps * D**2 / scale**2))``."""
    return int(max(1, min(1 << 40, round_half_up(eps * d * d / (scale_in * scale_in)))))


def affine_params(gamma, beta, scale_out, zero_point):
    """Re-parameterise the LayerNorm affine for an int8 output at one scale and zero point.

    Real output ``gamma * z + beta`` with ``z = z_int / 2**NORM_FRAC`` must become
    ``(gain * z_int + bias) / 2**shift`` in output codes. The shift is the largest one
    (most precision) that keeps ``|gain| < 2**15`` and ``|bias| < 2**31``.

    Returns
    -------
    (gain, bias, shift) : int16 array, int32 array, int
    """
    gamma = np.asarray(gamma, np.float64)
    beta = np.asarray(beta, np.float64)
    g_real = gamma / scale_out / (1 << NORM_FRAC)       # gain at shift 0
    b_real = beta / scale_out + zero_point
    shift = 46
    gmax = float(np.abs(g_real).max(initial=0.0))
    bmax = float(np.abs(b_real).max(initial=0.0))
    if gmax > 0:
        shift = min(shift, math.floor(math.log2((2**15 - 1) / gmax)))
    if bmax > 0:
        shift = min(shift, math.floor(math.log2((2**31 - 1) / bmax)))
    if shift < 0:
        raise ValueError(f"LayerNorm affine does not fit: max |gamma|/scale = {gmax * 1024:.3g}, "
                         f"max |beta/scale + zp| = {bmax:.3g}")
    gain = np.clip(round_half_up(g_real * 2.0**shift), -32767, 32767).astype(np.int16)
    bias = np.clip(round_half_up(b_real * 2.0**shift), -(2**31 - 1), 2**31 - 1).astype(np.int32)
    return gain, bias, shift
