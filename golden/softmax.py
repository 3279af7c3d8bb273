"""Integer softmax in the base-2 log domain: gating probabilities and attention log2 codes.

Scores enter as int16 **log2-domain** values ``u = round(logit * log2(e) * 2**LOG2_FRAC)``,
produced by a requantizer (:func:`golden.quant.requantize` with ``bits=16``) whose
multiplier folds the tensor scales, ``1/sqrt(d)`` and ``log2(e) * 2**LOG2_FRAC``. Then
``exp(logit - max) = 2**(-(m - u) / 2**LOG2_FRAC)`` needs only shifts and a 64-entry table.

Output forms:

* :func:`softmax_u8` (gating): unsigned Q0.8 probabilities, one reciprocal per row.
* :func:`log2_codes` + :func:`attention_pv` (attention): 4-bit codes ``c`` of the
  *unnormalised* exponentials, ``e = 2**-c`` (code 15 = zero), so P.V is
  shift-and-add, and normalisation is deferred to one reciprocal per row. This is
  what the attention kernel (``rtl/compute/attention.py``) implements.
* :func:`sqrt2_codes` + :func:`attention_pv_sqrt2`: the reference's (CoQMoE)
  4-bit log-sqrt2 codes, ``e = 2**(-c/2)``, half-octave steps; in hardware form
  ``2**-ceil(c/2)`` shifts into an even and an odd accumulator and one multiply by
  sqrt(2) per output and per denominator.
* :func:`mant4_codes` + :func:`attention_pv_mant4`: the exponential itself with a
  4-bit mantissa, ``e = MANT_TABLE[d % 64] * 2**-(d // 64)`` (a power of two times a
  mantissa in [8, 16] / 16, relative error at most 5.4 %, below 2**-4), over the same
  15 octaves as the log2 codes. P.V multiplies each value by the 5-bit table entry
  before the shift. Far closer to the real softmax than either 4-bit code
  (``docs/quantization.md``: it lifts the routing agreement of the study models from
  0.89-0.92 to 0.97-0.98).

All take the row maximum over the whole row (the hardware keeps a running maximum
while the row streams in and buffers the scores until the row ends).
"""

import numpy as np

from .quant import round_shift

__all__ = [
    "LOG2_FRAC", "EXP2_BITS", "EXP2_TABLE", "CODE_BITS", "CODE_ZERO", "RECIP_BITS",
    "SQRT2_Q15", "exp2_neg", "normalized_reciprocal", "softmax_u8", "log2_codes", "attention_pv",
    "sqrt2_codes", "attention_pv_sqrt2", "MANT_BITS", "MANT_TABLE", "MANT_CODE_ZERO",
    "mant4_codes", "attention_pv_mant4", "ATTENTION_CODES", "attention_from_scores",
]

#: Fraction bits of log2-domain scores: ``u`` counts 1/64 of a binary order of magnitude.
LOG2_FRAC = 6
#: Exponentials are unsigned Q1.15: ``2**-x`` for ``x >= 0`` is at most ``2**15``.
EXP2_BITS = 15
#: ``EXP2_TABLE[f] = round_half_up(2**15 * 2**(-f / 64))``, f in 0..63: 64 entries of 16 bits.
EXP2_TABLE = np.floor(2.0 ** (EXP2_BITS - np.arange(1 << LOG2_FRAC) / (1 << LOG2_FRAC)) + 0.5
                      ).astype(np.int64)
#: Attention probability codes are 4 bits; the largest code means "zero weight".
CODE_BITS = 4
CODE_ZERO = (1 << CODE_BITS) - 1
#: Reciprocals are normalised to ``[2**15, 2**16]`` (17-bit unsigned, one DSP port).
RECIP_BITS = 15
#: Fraction bits of the mant4 exponentials' mantissas.
MANT_BITS = 4
#: ``MANT_TABLE[f] = round_half_up(2**MANT_BITS * 2**(-f / 64))``, f in 0..63: 16 down to 8.
MANT_TABLE = np.floor(2.0 ** (MANT_BITS - np.arange(1 << LOG2_FRAC) / (1 << LOG2_FRAC)) + 0.5
                      ).astype(np.int64)
#: The mant4 code meaning "zero weight": distances of 15 octaves and more.
MANT_CODE_ZERO = CODE_ZERO << LOG2_FRAC
#: sqrt(2) in Q1.15 (``round_half_up(sqrt(2) * 2**15)``) for the odd log-sqrt2 codes.
SQRT2_Q15 = 46341


def _as_int(name, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {x.dtype}")
    return x.astype(np.int64)


def _check_u(u):
    u = _as_int("u", u)
    if u.size and (u.min() < -32768 or u.max() > 32767):
        raise ValueError(f"u must hold int16 values, found [{int(u.min())}, {int(u.max())}]")
    if u.ndim == 0 or u.shape[-1] == 0:
        raise ValueError(f"u must have at least one score per row, got shape {u.shape}")
    return u


def _check_pv(codes, v, zero=CODE_ZERO):
    codes = _as_int("codes", codes)
    v = _as_int("v", v)
    if codes.size and (codes.min() < 0 or codes.max() > zero):
        raise ValueError(f"codes must be in [0, {zero}], "
                         f"found [{int(codes.min())}, {int(codes.max())}]")
    if v.size and (v.min() < -128 or v.max() > 127):
        raise ValueError(f"v must hold int8 values, found [{int(v.min())}, {int(v.max())}]")
    if codes.shape[-1] != v.shape[-2]:
        raise ValueError(f"codes have {codes.shape[-1]} keys but v has {v.shape[-2]} rows")
    return codes, v


def exp2_neg(d):
    """``2**(-d / 64)`` in Q1.15 for ``d >= 0``: ``EXP2_TABLE[d % 64] >> (d // 64)``.

    Exact integer definition (truncating shift of a rounded table entry). Result in
    ``[0, 2**15]``; zero once ``d >= 16 * 64``. Max error against the real function is
    below 1 LSB (``2**-15``).
    """
    d = _as_int("d", d)
    if d.size and d.min() < 0:
        raise ValueError(f"d must be >= 0, found {int(d.min())}")
    return np.right_shift(EXP2_TABLE[d & ((1 << LOG2_FRAC) - 1)], np.minimum(d >> LOG2_FRAC, 63))


def normalized_reciprocal(den):
    """One reciprocal per row: ``rec = floor(2**(k + 15) / den)`` with ``k = bit_length(den)``.

    ``rec`` lies in ``[2**15, 2**16]``, so ``x / den ~= (x * rec) >> (k + 15)``.

    Parameters
    ----------
    den : int array, every value in ``[1, 2**40)``

    Returns
    -------
    (rec, k) : int64 arrays shaped like ``den``
    """
    den = _as_int("den", den)
    if den.size and (den.min() < 1 or den.max() >= 1 << 40):
        raise ValueError(f"den must be in [1, 2**40), found [{int(den.min())}, {int(den.max())}]")
    k = np.zeros_like(den)
    rest = den.copy()
    while np.any(rest):  # bit_length, exact for int64
        k += rest > 0
        rest >>= 1
    rec = np.left_shift(1, k + RECIP_BITS) // den
    return rec, k


def softmax_u8(u):
    """Softmax over the last axis to unsigned Q0.8 probabilities (gating).

    ``d = max(u) - u``; ``e = exp2_neg(d)`` (Q1.15); ``s = sum(e)`` (at least ``2**15``);
    ``(rec, k) = normalized_reciprocal(s)``;
    ``p = min(round_shift(e * rec, k + 15 - 8), 255)``. ``p / 256`` approximates the
    softmax probability; the top probability saturates at 255 (0.996).

    Parameters
    ----------
    u : int array, shape (..., E)
        int16 log2-domain scores (:data:`LOG2_FRAC` fraction bits). ``E <= 2**16``.

    Returns
    -------
    numpy.ndarray of uint8, shape like ``u``
    """
    u = _check_u(u)
    e = exp2_neg(u.max(axis=-1, keepdims=True) - u)
    rec, k = normalized_reciprocal(e.sum(axis=-1, keepdims=True))
    p = round_shift(e * rec, k + RECIP_BITS - 8)
    return np.minimum(p, 255).astype(np.uint8)


def log2_codes(u):
    """4-bit log2 codes of the unnormalised exponentials ``exp(logit - row max)``.

    ``c = min(round_shift(max(u) - u, LOG2_FRAC), 15)``: the exponential
    ``2**(-(m-u)/64)`` rounded to the nearest power of two ``2**-c`` in the log domain
    (halves round to the smaller weight). Code 15 (:data:`CODE_ZERO`) means zero weight:
    everything at or below ``2**-14.5`` of the row maximum is dropped. The row maximum
    always has code 0.

    Parameters
    ----------
    u : int array, shape (..., N)
        int16 log2-domain attention scores.

    Returns
    -------
    numpy.ndarray of uint8 in [0, 15], shape like ``u``
    """
    u = _check_u(u)
    d = u.max(axis=-1, keepdims=True) - u
    return np.minimum(round_shift(d, LOG2_FRAC), CODE_ZERO).astype(np.uint8)


def attention_pv(codes, v):
    """P.V with log2 codes and deferred normalisation: shift-and-add, one reciprocal per row.

    For each row ``i``: weights ``w_ij = 2**(14 - c_ij)`` (0 for code 15),
    ``num_i = sum_j w_ij * v_j`` (so ``v_j << (14 - c_ij)``, no multiplier),
    ``den_i = sum_j w_ij`` (at least ``2**14``: the row maximum has code 0),
    ``(rec, k) = normalized_reciprocal(den_i)`` and
    ``out_i = clamp(round_shift(num_i * rec, k + 15), -128, 127)``.

    The output is a convex combination of rows of ``v`` and so has ``v``'s scale.

    Parameters
    ----------
    codes : int array, shape (..., M, N), values in [0, 15]
    v : int array, shape (..., N, D), int8

    Returns
    -------
    numpy.ndarray of int8, shape (..., M, D)
        ``N <= 2**16`` keeps ``num`` within 2**37 and every product below 2**54.
    """
    codes, v = _check_pv(codes, v)
    w = np.where(codes < CODE_ZERO, np.left_shift(1, np.maximum(CODE_ZERO - 1 - codes, 0)), 0)
    num = w @ v
    rec, k = normalized_reciprocal(w.sum(axis=-1, keepdims=True))
    return np.clip(round_shift(num * rec, k + RECIP_BITS), -128, 127).astype(np.int8)


def sqrt2_codes(u):
    """4-bit log-sqrt2 codes of the unnormalised exponentials (half-octave steps).

    ``c = min(round_shift(2 * (max(u) - u), LOG2_FRAC), 15)``: the exponential
    ``2**(-(m-u)/64)`` rounded to the nearest power of sqrt(2) in the log domain
    (halves to the smaller weight), ``c = round(-2 log2(e / e_max))`` as the reference's
    log-sqrt2 quantizer with ``Delta`` = the row maximum. Code 15 (:data:`CODE_ZERO`)
    means zero weight: everything at or below ``2**-7.25`` of the row maximum.

    Returns
    -------
    numpy.ndarray of uint8 in [0, 15], shape like ``u``
    """
    u = _check_u(u)
    d = u.max(axis=-1, keepdims=True) - u
    return np.minimum(round_shift(2 * d, LOG2_FRAC), CODE_ZERO).astype(np.uint8)


def attention_pv_sqrt2(codes, v):
    """P.V with log-sqrt2 codes, shift-only plus one sqrt(2) multiply (the reference's form).

    ``2**(-c/2) = 2**(-ceil(c/2)) * sqrt(2)**(c odd)``. For each row ``i``: weights
    ``w_ij = 2**(7 - ceil(c_ij / 2))`` (0 for code 15), so ``v_j << (7 - ceil(c/2))``;
    even codes accumulate into ``num_e, den_e``, odd codes into ``num_o, den_o``; then
    ``num = num_e * 2**15 + num_o * SQRT2_Q15``, ``den = den_e * 2**15 + den_o * SQRT2_Q15``,
    ``(rec, k) = normalized_reciprocal(den)``,
    ``out = clamp(round_shift(num * rec, k + 15), -128, 127)``.

    Parameters
    ----------
    codes : int array, shape (..., M, N), values in [0, 15]
    v : int array, shape (..., N, D), int8

    Returns
    -------
    numpy.ndarray of int8, shape (..., M, D)
        ``N <= 2**16`` keeps every product below 2**63.
    """
    codes, v = _check_pv(codes, v)
    w = np.where(codes < CODE_ZERO, np.left_shift(1, 7 - ((codes + 1) >> 1)), 0)
    odd = (codes & 1).astype(bool)
    w_e, w_o = np.where(odd, 0, w), np.where(odd, w, 0)
    num = np.left_shift(w_e @ v, EXP2_BITS) + (w_o @ v) * SQRT2_Q15
    den = np.left_shift(w_e.sum(axis=-1, keepdims=True), EXP2_BITS) \
        + w_o.sum(axis=-1, keepdims=True) * SQRT2_Q15
    rec, k = normalized_reciprocal(den)
    return np.clip(round_shift(num * rec, k + RECIP_BITS), -128, 127).astype(np.int8)


def mant4_codes(u):
    """10-bit codes of the unnormalised exponentials for :func:`attention_pv_mant4`.

    ``c = min(max(u) - u, MANT_CODE_ZERO)``: the distance from the row maximum in
    1/64 octaves, ``c // 64`` the octave and ``c % 64`` the mantissa's table index.
    :data:`MANT_CODE_ZERO` (960, 15 octaves) means zero weight, the same reach as the
    log2 codes. The row maximum has code 0.

    Returns
    -------
    numpy.ndarray of uint16 in [0, 960], shape like ``u``
    """
    u = _check_u(u)
    d = u.max(axis=-1, keepdims=True) - u
    return np.minimum(d, MANT_CODE_ZERO).astype(np.uint16)


def attention_pv_mant4(codes, v):
    """P.V with mant4 codes: each value times a 5-bit mantissa, shifted; one reciprocal per row.

    For each row ``i``: weights ``w_ij = MANT_TABLE[c_ij % 64] << (14 - c_ij // 64)``
    (0 for :data:`MANT_CODE_ZERO`; at most ``2**18``), ``num_i = sum_j w_ij * v_j``,
    ``den_i = sum_j w_ij``, ``(rec, k) = normalized_reciprocal(den_i)`` and
    ``out_i = clamp(round_shift(num_i * rec, k + 15), -128, 127)``.

    Parameters
    ----------
    codes : int array, shape (..., M, N), values in [0, 960]
    v : int array, shape (..., N, D), int8

    Returns
    -------
    numpy.ndarray of int8, shape (..., M, D)
        ``N <= 2**16`` keeps ``num`` below 2**41 and every product below 2**59.
    """
    codes, v = _check_pv(codes, v, MANT_CODE_ZERO)
    octave = codes >> LOG2_FRAC
    w = np.where(codes < MANT_CODE_ZERO,
                 np.left_shift(MANT_TABLE[codes & ((1 << LOG2_FRAC) - 1)],
                               np.maximum(CODE_ZERO - 1 - octave, 0)), 0)
    num = w @ v
    rec, k = normalized_reciprocal(w.sum(axis=-1, keepdims=True))
    return np.clip(round_shift(num * rec, k + RECIP_BITS), -128, 127).astype(np.int8)


#: The attention probabilities' code forms: ``"log2"`` (4-bit, octave steps,
#: :func:`log2_codes` and :func:`attention_pv`), ``"sqrt2"`` (4-bit, half-octave steps,
#: :func:`sqrt2_codes` and :func:`attention_pv_sqrt2`) or ``"mant4"`` (a 4-bit
#: mantissa and an octave, :func:`mant4_codes` and :func:`attention_pv_mant4`).
#: ``QuantParams`` records the index of its form (``quant.attn_codes``).
ATTENTION_CODES = ("log2", "sqrt2", "mant4")
_ATTENTION = {"log2": (log2_codes, attention_pv), "sqrt2": (sqrt2_codes, attention_pv_sqrt2),
              "mant4": (mant4_codes, attention_pv_mant4)}


def attention_from_scores(u, v, codes="log2"):
    """Codes of the log2-domain scores ``u`` and their P.V: ``(codes, out)``.

    Parameters
    ----------
    u : int array, shape (..., M, N), int16 (``requantize(q @ k.T, ...)``)
    v : int array, shape (..., N, D), int8
    codes : str, one of :data:`ATTENTION_CODES`

    Returns
    -------
    (codes, out)
        numpy.ndarray (..., M, N) of uint8 (log2, sqrt2) or uint16 (mant4), and
        numpy.ndarray of int8 (..., M, D).
    """
    if codes not in ATTENTION_CODES:
        raise ValueError(f"codes must be one of {', '.join(ATTENTION_CODES)}, got {codes!r}")
    to_codes, pv = _ATTENTION[codes]
    c = to_codes(u)
    return c, pv(c, v)
