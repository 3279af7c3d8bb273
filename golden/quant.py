"""Fixed-point primitives of the integer spec: rounding, saturation, dyadic requantization, linear.

Every later op (LayerNorm, softmax, GELU, MoE combine, the whole integer forward)
is built from these functions, and every RTL datapath that rescales a number
matches them bit for bit. ``docs/arithmetic.md`` summarises them.

Conventions
-----------
* Integers travel as ``numpy.int64`` arrays inside the spec; results are
  returned in the narrowest numpy dtype holding the stated range.
* **One rounding mode** for every right shift: round half up (towards
  +infinity), ``(x + 2**(s-1)) >> s`` with an arithmetic shift. Hardware does
  this with one adder before the shifter.
* **Saturate, never wrap**: every narrowing clamps to the target range.
* A real number ``r`` is represented by an integer ``q`` with a scale and a zero
  point: ``r = scale * (q - zero_point)``.
"""

import numpy as np

from .gemm import ACC_MAX, ACC_MIN, int8_matmul

__all__ = [
    "check_bits", "int_dtype", "MULT_BITS", "MULT_MAX", "SHIFT_MAX", "BIAS_MAX", "K_MAX_BIASED",
    "int_range", "round_shift", "saturate", "round_half_up",
    "dyadic", "requantize", "quantize", "dequantize",
    "quantize_weight_per_channel", "quantize_bias", "fold_zero_point", "linear", "residual_add",
]

#: Requantization multipliers are unsigned 15-bit integers (a DSP48E2 B port is 18 bit signed).
MULT_BITS = 15
MULT_MAX = (1 << MULT_BITS) - 1
#: Largest right shift of a requantizer: int32 accumulator x 15-bit multiplier is < 2**46.
SHIFT_MAX = 47
#: Folded biases stay within +-2**30 so ``acc + bias`` fits int32 for K <= K_MAX_BIASED.
BIAS_MAX = 1 << 30
#: Longest reduction for a biased int8 linear layer: K * 2**14 + 2**30 <= 2**31 - 1.
K_MAX_BIASED = (ACC_MAX - BIAS_MAX) // (1 << 14)


def check_bits(name, bits, lo, hi):
    """Raise ``ValueError`` naming ``name`` unless ``bits`` is an integer in ``[lo, hi]``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {bits!r}")


def int_dtype(bits):
    """The narrowest numpy signed container of ``bits`` (<= 32) bits."""
    return np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32


def int_range(bits, signed=True):
    """``(lo, hi)`` of a two's-complement (or unsigned) integer of ``bits`` bits."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _as_int(name, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {x.dtype}")
    return x.astype(np.int64)


def _check_range(name, x, lo, hi):
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], found [{int(x.min())}, {int(x.max())}]")


def round_shift(x, shift):
    """Arithmetic right shift by ``shift`` with round half up.

    ``floor((x + 2**(shift-1)) / 2**shift)`` for ``shift >= 1``; ``x`` for ``shift == 0``.
    ``x`` and ``shift`` broadcast (per-channel shifts are arrays). ``x`` must stay
    below 2**62 in magnitude (every caller in the spec does). Exact: no float.
    """
    x = _as_int("x", x)
    shift = _as_int("shift", shift)
    _check_range("shift", shift, 0, 62)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    return np.right_shift(x + half, shift)


def saturate(x, bits, signed=True):
    """Clamp integers to a ``bits``-bit two's-complement (or unsigned) range."""
    lo, hi = int_range(bits, signed)
    return np.clip(_as_int("x", x), lo, hi)


def round_half_up(x):
    """Round floats to the nearest integer, halves towards +infinity (the spec's one mode).

    Used where the exporter turns real numbers into integers (scales, biases,
    tables), so that export and datapath round the same way.
    """
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def dyadic(scale):
    """Approximate positive real ``scale`` (array or scalar) by ``mult * 2**-shift``.

    The multiplier is the largest-precision one: ``mult`` in ``[2**14, 2**15)``
    whenever the shift range allows it, ``mult <= MULT_MAX`` and
    ``0 <= shift <= SHIFT_MAX``. Relative error is at most ``2**-15`` for scales
    in ``[2**-32, 2**15)``.

    Returns
    -------
    (mult, shift) : int64 arrays shaped like ``scale``

    Raises
    ------
    ValueError
        If a scale is not finite, not positive, or so large that no multiplier fits
        (``scale >= 32767.5``).
    """
    s = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"scale must be finite and positive, got {s[~(np.isfinite(s) & (s > 0))].ravel()[:4]}")
    if np.any(s >= MULT_MAX + 0.5):
        raise ValueError(f"scale must be below {MULT_MAX + 0.5}, got {float(s.max())}")
    # frexp: s = f * 2**e with f in [0.5, 1); mult = f * 2**15 -> shift = 15 - e.
    _, e = np.frexp(s)
    shift = np.clip(MULT_BITS - e, 0, SHIFT_MAX)
    mult = round_half_up(np.ldexp(s, shift))
    # Rounding up to 2**15 (f close to 1) costs one bit of shift.
    over = mult > MULT_MAX
    shift = np.where(over, shift - 1, shift)
    mult = np.where(over, round_half_up(np.ldexp(s, shift)), mult)
    return mult.astype(np.int64), shift.astype(np.int64)


def requantize(acc, mult, shift, zero_point=0, bits=8):
    """Rescale integers by ``mult * 2**-shift``, add a zero point, saturate to ``bits``.

    ``out = clamp(round_shift(acc * mult, shift) + zero_point, -2**(bits-1), 2**(bits-1)-1)``

    Parameters
    ----------
    acc : int array
        Values in int32 (an accumulator, or any narrower integer tensor).
    mult, shift : int or int array
        From :func:`dyadic`; broadcast against ``acc`` (per output channel: shape ``(N,)``
        against ``acc`` of shape ``(M, N)``). ``mult`` in ``[0, MULT_MAX]``, ``shift``
        in ``[0, SHIFT_MAX]``; the product ``acc * mult`` is below ``2**46``.
    zero_point : int or int array
        Added after rounding; must lie in the output range.
    bits : int
        Output width, signed, in [2, 32]: 8 (activations), 16 (residual stream,
        log2-domain scores), 32; widths below 8 emulate narrower activations (the
        quantization study's A6 / A4) in int8 containers. The hardware's output stage
        implements 8, 16 and 32.

    Returns
    -------
    numpy.ndarray of int8 (``bits`` <= 8), int16 (<= 16) or int32
    """
    acc = _as_int("acc", acc)
    mult = _as_int("mult", mult)
    shift = _as_int("shift", shift)
    _check_range("acc", acc, ACC_MIN, ACC_MAX)
    _check_range("mult", mult, 0, MULT_MAX)
    _check_range("shift", shift, 0, SHIFT_MAX)
    check_bits("bits", bits, 2, 32)
    lo, hi = int_range(bits)
    zp = _as_int("zero_point", zero_point)
    _check_range("zero_point", zp, lo, hi)
    out = np.clip(round_shift(acc * mult, shift) + zp, lo, hi)
    return out.astype(int_dtype(bits))


def quantize(x, scale, zero_point=0, bits=8):
    """Real ``x`` to integers: ``clamp(round_half_up(x / scale) + zero_point)`` in ``bits`` signed
    (``bits`` in [2, 32], the container as :func:`requantize`)."""
    check_bits("bits", bits, 2, 32)
    lo, hi = int_range(bits)
    q = round_half_up(np.asarray(x, dtype=np.float64) / scale) + np.asarray(zero_point, np.int64)
    return np.clip(q, lo, hi).astype(int_dtype(bits))


def dequantize(q, scale, zero_point=0):
    """Integers back to reals: ``scale * (q - zero_point)`` (float64)."""
    return (np.asarray(q, np.float64) - zero_point) * scale


def quantize_weight_per_channel(w, bits=8):
    """Symmetric weights, one scale per output channel (row of a ``[out, in]`` matrix).

    With ``m = 2**(bits-1) - 1`` (127 for int8): ``scale[n] = max|w[n, :]| / m`` (a zero
    row gets scale 1) and ``q = clamp(round_half_up(w / scale), -m, m)``: the code
    ``-m - 1`` is never used, so the weight range is symmetric. ``bits`` in [2, 8]
    (narrower weights live in int8 containers).

    Returns
    -------
    (q, scale) : int8 array shaped like ``w``, float64 array of shape ``w.shape[:-1]``
    """
    check_bits("bits", bits, 2, 8)
    m = (1 << (bits - 1)) - 1
    w = np.asarray(w, dtype=np.float64)
    amax = np.abs(w).max(axis=-1)
    scale = np.where(amax > 0, amax / m, 1.0)
    q = np.clip(round_half_up(w / scale[..., None]), -m, m).astype(np.int8)
    return q, scale


def quantize_bias(name, bias, scale):
    """Real bias to the accumulator's scale (``scale = s_x * s_w[n]``), checked against ``BIAS_MAX``."""
    q = round_half_up(np.asarray(bias, np.float64) / scale)
    _check_range(f"{name} (quantized bias)", q, -BIAS_MAX, BIAS_MAX)
    return q


def fold_zero_point(name, weight, bias, zero_point):
    """Fold the input zero point into the bias: ``sum((x - zp) * w) + b == sum(x * w) + b'``.

    ``b' = b - zp * sum_k w[n, k]``. The MAC array then multiplies raw int8 codes.
    Raises ``ValueError`` naming the layer when ``b'`` leaves ``[-BIAS_MAX, BIAS_MAX]``.

    Returns
    -------
    numpy.ndarray of int32, shape ``weight.shape[:-1]``
    """
    weight = _as_int(f"{name} weight", weight)
    folded = _as_int(f"{name} bias", bias) - _as_int(f"{name} zero point", zero_point) * weight.sum(-1)
    _check_range(f"{name} (folded bias)", folded, -BIAS_MAX, BIAS_MAX)
    return folded.astype(np.int32)


def linear(x, weight, bias):
    """The linear layer as the MAC array computes it: ``x @ weight.T + bias`` in int32.

    Parameters
    ----------
    x : int array, shape (M, K)
        Input codes in int8 (the zero point is already folded into ``bias``).
    weight : int array, shape (N, K)
        int8 weights, torch layout ``[out, in]``.
    bias : int array, shape (N,)
        Folded bias in ``[-BIAS_MAX, BIAS_MAX]``.

    Returns
    -------
    numpy.ndarray of int32, shape (M, N)
        Exact: with ``K <= K_MAX_BIASED`` (65536) and the bias bound, the sum never
        leaves int32, so no saturation is needed or applied.
    """
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.shape[1] > K_MAX_BIASED:
        raise ValueError(f"weight must be [out, in] with in <= {K_MAX_BIASED}, got shape {weight.shape}")
    bias = _as_int("bias", bias)
    _check_range("bias", bias, -BIAS_MAX, BIAS_MAX)
    return (int8_matmul(x, weight.T).astype(np.int64) + bias).astype(np.int32)


def residual_add(x, y):
    """Residual add on the int16 residual stream: ``sat16(x + y)``.

    Both operands are at the residual stream's single scale: every branch that ends
    in a residual add (patch embedding, attention proj, fc2, the MoE combine)
    requantizes its accumulator to that scale first (``requantize(..., bits=16)``),
    which is the rescale; the add itself saturates instead of wrapping.

    Returns
    -------
    numpy.ndarray of int16
    """
    x = _as_int("x", x)
    y = _as_int("y", y)
    for name, v in (("x", x), ("y", y)):
        _check_range(name, v, -32768, 32767)
    return np.clip(x + y, -32768, 32767).astype(np.int16)
