"""The requantizers' last step, ``saturate(round_shift(x, shift) + offset)`` with a shift
known only at run time, in two register stages.

Done in one cycle, this step was the longest chain of four units (a wide adder, a barrel
shifter behind it and a saturating compare behind that; ``docs/throughput.md``, the
clock). Split, neither stage holds more than one of them:

* stage 1: ``halved = (x << 1) >> shift``, a barrel shifter alone. For ``shift >= 1``
  it is ``floor(x / 2**(shift - 1))``; for ``shift == 0`` it is ``2x``;
* stage 2: ``(halved + 1) >> 1`` is ``golden.quant.round_shift(x, shift)`` in both cases
  (``floor((floor(a) + 1) / 2) = floor((a + 1) / 2)``, and ``floor(x + 1/2) = x``); the
  offset is added and the sum saturated to ``[lo, hi]``.
"""

from amaranth.hdl import Mux, Shape, Signal, Value

__all__ = ["ROUND_STAGES", "round_shift_saturate"]

#: Register stages of :func:`round_shift_saturate`.
ROUND_STAGES = 2


def round_shift_saturate(m, en, value, shift, shape, *, lo=None, hi=None, offset=0, name):
    """Add the two stages to ``m`` (domain ``sync``, both advance when ``en`` is high) and
    return the second stage's register, of ``shape``:
    ``min(max(round_shift(value, shift) + offset, lo), hi)``.

    ``value`` and ``shift`` are the first stage's inputs; ``offset``, ``lo`` and ``hi``
    (constants, or signals of the beat one stage later) the second's. A bound of
    ``None`` is not applied (the caller knows the sum cannot pass it). Latency
    :data:`ROUND_STAGES` cycles of ``en``.
    """
    value = Value.cast(value)
    halved = Signal(Shape(len(value) + 1, value.shape().signed), name=f"{name}_halved")
    out = Signal(shape, name=name)
    total = ((halved + 1) >> 1) + offset
    result = total
    if hi is not None:
        result = Mux(total > hi, hi, result)
    if lo is not None:
        result = Mux(total < lo, lo, result)
    with m.If(en):
        m.d.sync += [halved.eq((value << 1) >> shift), out.eq(result)]
    return out
