"""Sequential integer reciprocal and square root: once per row, exact, no multipliers.

The softmax, LayerNorm and attention units normalise once per row (deferred
normalisation), so they can afford a few dozen cycles of a bit-serial unit
instead of a table + Newton approximation, and they then match the golden spec
exactly:

* :class:`Reciprocal`: ``golden.softmax.normalized_reciprocal``:
  ``k = bit_length(den)``, ``rec = floor(2**(k+15) / den)`` in ``[2**15, 2**16]``,
  by restoring division, one quotient bit per cycle (17 cycles).
* :class:`ISqrt`: ``floor(sqrt(v))`` by the digit-by-digit (restoring) method, one
  result bit per cycle.

Both are ``i``/``o`` stream components that take one operand at a time: ``i`` is
ready only while the unit is idle; the result is held on ``o`` until taken.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int, validating

__all__ = ["RECIP_BITS", "recip_layout", "Reciprocal", "ISqrt"]

#: ``rec`` is normalised to ``[2**RECIP_BITS, 2**(RECIP_BITS+1)]`` (``golden.softmax.RECIP_BITS``).
RECIP_BITS = 15


def recip_layout(width):
    """A reciprocal: ``rec`` (17 bits) and ``k = bit_length(den)`` for ``den`` of ``width`` bits."""
    return data.StructLayout({"rec": RECIP_BITS + 2, "k": range(width + 1)})


class Reciprocal(wiring.Component):
    """``(rec, k) = normalized_reciprocal(den)`` for ``1 <= den < 2**width``.

    Parameters
    ----------
    width : int, 1..48
        Bits of ``den``.

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
        ``den``; 0 is outside the spec (the result is then ``rec = 2**17 - 1``, ``k = 0``).
    o : Out(stream.Signature(recip_layout(width)))

    Latency: ``o`` is valid :attr:`LATENCY` (18) cycles after ``i`` is taken; ``i`` is
    ready again the cycle after ``o`` is taken, so back to back one division takes
    19 cycles.
    """

    #: Cycles from taking ``i`` to ``o`` valid: normalise (1) and 17 quotient bits.
    LATENCY = RECIP_BITS + 3

    def __init__(self, width):
        with validating(self):
            check_int("width", width, 1, 48)
        self._width = width
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(recip_layout(width))),
        })

    def elaborate(self, platform):
        m = Module()
        w = self._width
        den = Signal(w)                  # normalised: MSB at bit w-1
        rem = Signal(w + 1)
        quo = Signal(RECIP_BITS + 2)
        k = Signal(range(w + 1))
        step = Signal(range(RECIP_BITS + 3))
        # bit_length of the operand (priority encoder) and the shift that normalises it.
        length = Signal(range(w + 1))
        for bit in range(w):
            with m.If(self.i.payload[bit]):
                m.d.comb += length.eq(bit + 1)
        norm = Signal(range(w + 1))
        m.d.comb += norm.eq(w - length)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [den.eq(self.i.payload << norm), k.eq(length),
                                 rem.eq(Const(1 << (w - 1), w + 1)), quo.eq(0), step.eq(0)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                # 2**(k+15) / den == 2**(w-1+16) / (den << (w-k)): quotient bits 16..0,
                # starting from the partial remainder 2**(w-1).
                fits = rem >= den
                m.d.sync += [quo.eq(Cat(fits, quo[:-1])),
                             rem.eq((rem - Mux(fits, den, 0)) << 1),
                             step.eq(step + 1)]
                with m.If(step == RECIP_BITS + 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
        m.d.comb += [self.o.payload.rec.eq(quo), self.o.payload.k.eq(k)]
        return m


class ISqrt(wiring.Component):
    """``floor(sqrt(v))`` for ``0 <= v < 2**width``, one result bit per cycle.

    Parameters
    ----------
    width : int, 2..64, even
        Bits of ``v``; the root has ``width // 2`` bits.

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
    o : Out(stream.Signature(unsigned(width // 2)))

    Latency: ``o`` is valid ``width // 2 + 1`` cycles after ``i`` is taken; ``i`` is
    ready again the cycle after ``o`` is taken.
    """

    def __init__(self, width):
        with validating(self):
            check_int("width", width, 2, 64)
            if width % 2:
                raise ValueError(f"width must be even, not {width}")
        self._width = width
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(width // 2))),
        })

    @property
    def latency(self):
        return self._width // 2 + 1

    def elaborate(self, platform):
        m = Module()
        n = self._width // 2
        value = Signal(self._width)          # remaining operand bits, two per step (MSB first)
        rem = Signal(n + 2)
        root = Signal(n)
        step = Signal(range(n + 1))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [value.eq(self.i.payload), rem.eq(0), root.eq(0), step.eq(0)]
                    m.next = "ROOT"
            with m.State("ROOT"):
                # Bring down two bits; the trial subtrahend is 4*root + 1.
                trial = Signal(n + 3)
                cur = Signal(n + 3)
                m.d.comb += [cur.eq(Cat(value[-2:], rem)), trial.eq(Cat(Const(1, 2), root))]
                fits = cur >= trial
                m.d.sync += [value.eq(value << 2),
                             rem.eq(cur - Mux(fits, trial, 0)),
                             root.eq(Cat(fits, root[:-1])),
                             step.eq(step + 1)]
                with m.If(step == n - 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
        m.d.comb += self.o.payload.eq(root)
        return m
