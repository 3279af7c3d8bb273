"""Sequential integer reciprocal and square root: once per row, exact, no multipliers.

The softmax, LayerNorm and attention units normalise once per row (deferred
normalisation), so they can afford a few dozen cycles of a digit-serial unit
instead of a table + Newton approximation, and they then match the golden spec
exactly:

* :class:`Reciprocal`: ``golden.softmax.normalized_reciprocal``:
  ``k = bit_length(den)``, ``rec = floor(2**(k+15) / den)`` in ``[2**15, 2**16]``,
  by restoring division of the normalised operand, ``digits`` quotient bits per
  cycle (17 quotient bits).
* :class:`ISqrt`: ``floor(sqrt(v))`` by the digit-by-digit (restoring) method,
  ``digits`` result bits per cycle.

Both are ``i``/``o`` stream components that work on one operand at a time::

    cycle   t        t+1 .. t+S      t+S+1 (= t + latency)
    i       taken    -               next operand may be taken (if o is taken now)
    o       -        -               valid, held until taken

``S = ceil(bits / digits)`` iteration cycles. ``i`` is ready while the unit is
idle, and also in the cycle its result is taken, so back to back (``o`` always
ready) one operation takes exactly ``latency`` cycles. Backpressure: the result
waits on ``o``; the unit takes no new operand meanwhile.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..params import check_int, validating

__all__ = ["RECIP_BITS", "recip_layout", "recip_latency", "Reciprocal", "ISqrt"]

#: ``rec`` is normalised to ``[2**RECIP_BITS, 2**(RECIP_BITS+1)]`` (``golden.softmax.RECIP_BITS``).
RECIP_BITS = 15
#: Quotient bits of ``rec``: 17 (``2**16`` itself occurs for ``den`` a power of two).
QUOTIENT_BITS = RECIP_BITS + 2


def recip_layout(width):
    """A reciprocal: ``rec`` (17 bits) and ``k = bit_length(den)`` for ``den`` of ``width`` bits."""
    return data.StructLayout({"rec": QUOTIENT_BITS, "k": range(width + 1)})


def _iterations(bits, digits):
    return -(-bits // digits)


def recip_latency(digits=1):
    """:attr:`Reciprocal.latency` of a reciprocal with ``digits`` quotient bits per cycle."""
    return _iterations(QUOTIENT_BITS, digits) + 1


class Reciprocal(wiring.Component):
    """``(rec, k) = normalized_reciprocal(den)`` for ``1 <= den < 2**width``.

    Parameters
    ----------
    width : int, 1..48
        Bits of ``den``.
    digits : int, 1..17
        Quotient bits per cycle (each one a compare-subtract of ``width + 1`` bits).

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
        ``den``; 0 is outside the spec (the result is then ``rec = 2**17 - 1``, ``k = 0``).
    o : Out(stream.Signature(recip_layout(width)))

    Latency: ``o`` is valid :attr:`latency` ``= ceil(17 / digits) + 1`` cycles after
    ``i`` is taken (18 at ``digits=1``, :attr:`LATENCY`); one operation per
    :attr:`latency` cycles back to back.
    Tested: every ``den`` below ``2**10``; random and edge operands at widths 1..40;
    digits 1, 2, 3, 17.
    """

    #: :attr:`latency` at ``digits=1``.
    LATENCY = QUOTIENT_BITS + 1

    def __init__(self, width, *, digits=1):
        with validating(self):
            check_int("width", width, 1, 48)
            check_int("digits", digits, 1, QUOTIENT_BITS)
        self._width, self._digits = width, digits
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(recip_layout(width))),
        })

    width = property(lambda self: self._width)
    digits = property(lambda self: self._digits)

    @property
    def latency(self):
        """Cycles from taking ``i`` to ``o`` valid (also the back-to-back period)."""
        return recip_latency(self._digits)

    def elaborate(self, platform):
        m = Module()
        w, digits = self._width, self._digits
        cycles = _iterations(QUOTIENT_BITS, digits)
        # Extra quotient bits of the last cycle: floor(floor(2**extra * x) / 2**extra) == floor(x).
        extra = cycles * digits - QUOTIENT_BITS
        den = Signal(w)                  # normalised: MSB at bit w-1
        rem = Signal(w + 1)
        quo = Signal(QUOTIENT_BITS + extra)
        k = Signal(range(w + 1))
        step = Signal(range(cycles))
        busy = Signal()
        done = Signal()
        # bit_length of the operand (priority encoder) and the shift that normalises it.
        length = Signal(range(w + 1))
        for bit in range(w):
            with m.If(self.i.payload[bit]):
                m.d.comb += length.eq(bit + 1)
        norm = Signal(range(w + 1))
        m.d.comb += norm.eq(w - length)
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~busy & (~done | self.o.ready)), self.o.valid.eq(done)]
        with m.If(self.o.ready):
            m.d.sync += done.eq(0)
        with m.If(take):
            # 2**(k+15) / den == 2**(w-1+16) / (den << (w-k)): quotient bits 16..0,
            # starting from the partial remainder 2**(w-1).
            m.d.sync += [den.eq(self.i.payload << norm), k.eq(length),
                         rem.eq(Const(1 << (w - 1), w + 1)), quo.eq(0), step.eq(0), busy.eq(1)]
        with m.If(busy):
            r, q = rem, quo
            for n in range(digits):
                # One subtraction per digit: its sign is the compare (one carry chain,
                # then a multiplexer). One signal per digit: the expressions refer to r twice.
                diff = Signal(signed(w + 2), name=f"diff_{n}")
                r_next = Signal(w + 1, name=f"rem_{n}")
                fits = ~diff[-1]
                m.d.comb += [diff.eq(r - den), r_next.eq(Mux(fits, diff, r) << 1)]
                r, q = r_next, Cat(fits, q[:-1])
            m.d.sync += [rem.eq(r), quo.eq(q), step.eq(step + 1)]
            with m.If(step == cycles - 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        m.d.comb += [self.o.payload.rec.eq(quo[extra:]), self.o.payload.k.eq(k)]
        return m


class ISqrt(wiring.Component):
    """``floor(sqrt(v))`` for ``0 <= v < 2**width``, ``digits`` result bits per cycle.

    Parameters
    ----------
    width : int, 2..64, even
        Bits of ``v``; the root has ``width // 2`` bits.
    digits : int, 1..32
        Root bits per cycle (each one a compare-subtract of ``width // 2 + 3`` bits).

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
    o : Out(stream.Signature(unsigned(width // 2)))

    Latency: ``o`` is valid :attr:`latency` ``= ceil(width / 2 / digits) + 1`` cycles
    after ``i`` is taken; one operation per :attr:`latency` cycles back to back.
    Tested: every ``v`` below ``2**12``; random and edge operands at widths 2..52;
    digits 1, 2, 3.
    """

    def __init__(self, width, *, digits=1):
        with validating(self):
            check_int("width", width, 2, 64)
            if width % 2:
                raise ValueError(f"width must be even, not {width}")
            check_int("digits", digits, 1, width // 2)
        self._width, self._digits = width, digits
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(width // 2))),
        })

    width = property(lambda self: self._width)
    digits = property(lambda self: self._digits)

    @property
    def latency(self):
        """Cycles from taking ``i`` to ``o`` valid (also the back-to-back period)."""
        return _iterations(self._width // 2, self._digits) + 1

    def elaborate(self, platform):
        m = Module()
        digits = self._digits
        cycles = _iterations(self._width // 2, digits)
        n = cycles * digits                  # root bits, the operand padded with leading zeros
        value = Signal(2 * n)                # remaining operand bits, two per step (MSB first)
        rem = Signal(n + 2)
        root = Signal(n)
        step = Signal(range(cycles))
        busy = Signal()
        done = Signal()
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~busy & (~done | self.o.ready)), self.o.valid.eq(done)]
        with m.If(self.o.ready):
            m.d.sync += done.eq(0)
        with m.If(take):
            m.d.sync += [value.eq(self.i.payload), rem.eq(0), root.eq(0), step.eq(0), busy.eq(1)]
        with m.If(busy):
            v, r, q = value, rem, root
            for j in range(digits):
                # Bring down two bits; the trial subtrahend is 4*root + 1.
                cur = Cat(v[-2:], r)
                trial = Cat(Const(1, 2), q)
                diff = Signal(signed(n + 3), name=f"diff_{j}")
                fits = ~diff[-1]
                r_next = Signal(n + 2, name=f"rem_{j}")
                m.d.comb += [diff.eq(cur - trial), r_next.eq(Mux(fits, diff, cur))]
                v, r, q = (v << 2)[:2 * n], r_next, Cat(fits, q[:-1])
            m.d.sync += [value.eq(v), rem.eq(r), root.eq(q), step.eq(step + 1)]
            with m.If(step == cycles - 1):
                m.d.sync += [busy.eq(0), done.eq(1)]
        m.d.comb += self.o.payload.eq(root)
        return m
