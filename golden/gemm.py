"""Integer GEMM: signed int8 x int8 products, int32 accumulation.

This is the first entry of the bit-exact arithmetic spec (``docs/arithmetic.md``).
The systolic MAC array (``rtl/compute/systolic.py``) and every linear layer built on it
must reproduce :func:`int8_matmul` bit for bit.
"""

import numpy as np

__all__ = ["INT8_MIN", "INT8_MAX", "ACC_BITS", "ACC_MIN", "ACC_MAX", "K_MAX", "int8_matmul"]

INT8_MIN = -128
INT8_MAX = 127

#: Accumulator width in bits (two's complement).
ACC_BITS = 32
ACC_MIN = -(1 << (ACC_BITS - 1))
ACC_MAX = (1 << (ACC_BITS - 1)) - 1

#: Longest reduction that provably cannot overflow the int32 accumulator.
#: The largest product magnitude is (-128) * (-128) = 2**14, so K terms stay in
#: range while K * 2**14 <= 2**31 - 1, i.e. K <= 131071. (The most negative
#: product is -128 * 127 = -16256, whose bound 132104 is looser.)
K_MAX = ACC_MAX // (INT8_MIN * INT8_MIN)


def _check_int8(name, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {x.dtype}")
    if x.size and (x.min() < INT8_MIN or x.max() > INT8_MAX):
        raise ValueError(
            f"{name} must hold int8 values in [{INT8_MIN}, {INT8_MAX}], "
            f"found [{int(x.min())}, {int(x.max())}]")
    return x.astype(np.int64)


def int8_matmul(a, b):
    """``a @ b`` for int8 operands with exact int32 accumulation.

    Parameters
    ----------
    a : array of int, shape (M, K)
        Left operand (tokens x input features), every value in [-128, 127].
    b : array of int, shape (K, N)
        Right operand (input features x output features), in [-128, 127].

    Returns
    -------
    numpy.ndarray of int32, shape (M, N)
        ``sum_k a[m, k] * b[k, n]``, exact. Products are 15-bit signed
        (range [-16256, 16384]); the sum is exact for ``K <= K_MAX`` (131071),
        so the result never wraps and needs no saturation.

    Raises
    ------
    ValueError
        If a value is outside int8, the inner dimensions differ, or
        ``K > K_MAX``.
    """
    a = _check_int8("a", a)
    b = _check_int8("b", b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    if a.shape[1] > K_MAX:
        raise ValueError(f"K must be in [0, {K_MAX}] for an int32 accumulator, got {a.shape[1]}")
    out = a @ b
    assert out.size == 0 or (out.min() >= ACC_MIN and out.max() <= ACC_MAX)
    return out.astype(np.int32)
