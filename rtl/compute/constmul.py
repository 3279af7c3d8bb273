"""Multiplication by a constant as shifted adds, so synthesis spends no hard multiplier on it.

Yosys maps every ``$mul`` whose operands are at least 2 bits wide to a DSP block (after
turning a constant's trailing zeros into a shift), constant operand or not: ``row * 24``
takes a MULT18X18D on ECP5 and a DSP48E2 on UltraScale+. The address arithmetic of the
buffers (row times pitch) and LayerNorm's scaling by the model width are such products;
:func:`times` writes them as the sum of the constant's signed digits instead (``24 =
32 - 8``: one subtractor), leaving the hard multipliers to the MAC arrays.
"""

from amaranth.hdl import Cat, Const, Value

__all__ = ["times", "signed_digits"]


def signed_digits(k):
    """The canonical signed-digit form of the integer ``k``: ``[(shift, +1 or -1), ...]``
    with no two adjacent nonzero digits, the fewest terms that sum to ``k``."""
    digits, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)             # +1 when k = 1 mod 4, -1 when k = 3 mod 4
            digits.append((shift, digit))
            k -= digit
        k >>= 1
        shift += 1
    return digits


def times(value, k):
    """``value * k`` for an Amaranth ``value`` and a Python integer ``k``, built from adds and
    subtracts of shifted copies of ``value``; same shape as ``value * k`` and the same value
    (the digits sum modulo 2**width, where the product fits)."""
    value = Value.cast(value)
    shape = (value * Const(k)).shape()
    if k == 0:
        return Const(0, shape)
    width = shape.width
    # Extended to the product's width first, so no term is narrower than the product.
    fill = value[-1].replicate(width - len(value)) if value.shape().signed \
        else Const(0, width - len(value))
    wide = Cat(value, fill)
    total = None
    for shift, digit in signed_digits(k):
        term = wide << shift
        total = (term if digit > 0 else -term) if total is None else \
            (total + term if digit > 0 else total - term)
    wrapped = total[:width]
    return wrapped.as_signed() if shape.signed else wrapped
