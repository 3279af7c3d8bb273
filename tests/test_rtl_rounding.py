"""The two-stage rounding shift and saturation shared by the requantizers, against
``golden.quant`` at the edges of its ranges, with the stages held by ``en``."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from golden.quant import round_shift
from rtl.compute.rounding import ROUND_STAGES, round_shift_saturate


class Harness(Elaboratable):
    def __init__(self, value_shape, out_shape, lo, hi, with_offset):
        self.en = Signal()
        self.value = Signal(value_shape)
        self.shift = Signal(6)
        self.offset = Signal(signed(16)) if with_offset else 0
        self.out_shape, self.lo, self.hi = out_shape, lo, hi

    def elaborate(self, platform):
        m = Module()
        self.out = round_shift_saturate(m, self.en, self.value, self.shift, self.out_shape,
                                        lo=self.lo, hi=self.hi, offset=self.offset, name="out")
        return m


def edge_values(rng, width, is_signed, n):
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
    edges = [lo, lo + 1, hi, hi - 1, 0, 1, -1 if is_signed else 2, 3, -3 if is_signed else 4]
    edges += [s * (1 << k) + d for k in range(width - 1) for s in ((1, -1) if is_signed else (1,))
              for d in (-1, 0, 1) if lo <= s * (1 << k) + d <= hi]
    return edges + [int(v) for v in rng.integers(lo, hi, n, endpoint=True)]


@pytest.mark.parametrize("is_signed, width, bounds, with_offset", [
    (True, 48, (-128, 127), True),          # the linear requantizer: zero point, int8
    (True, 48, (-(1 << 31), (1 << 31) - 1), True),
    (True, 40, (-32768, 32767), False),     # attention scores, LayerNorm z
    (False, 36, (None, 255), False),        # softmax probabilities: never negative
])
def test_matches_golden_under_random_enables(is_signed, width, bounds, with_offset):
    rng = np.random.default_rng(width + with_offset)
    lo, hi = bounds
    dut = Harness(signed(width) if is_signed else unsigned(width),
                  signed(33) if is_signed else unsigned(9), lo, hi, with_offset)
    values = edge_values(rng, width, is_signed, 400)
    # Half the shifts anywhere, half leaving the quotient near the saturation bounds.
    shifts = [int(s) if k % 2 else min(62, max(0, abs(v).bit_length() - int(s) % 12))
              for k, (v, s) in enumerate(zip(values, rng.integers(0, 63, len(values))))]
    shifts[:8] = [0, 1, 62, 0, 1, width - 1, width, width + 1]
    offsets = [int(o) for o in rng.integers(-200, 200, len(values), endpoint=True)]
    offsets[:4] = [-32768, 32767, 0, -1]
    got = []

    async def bench(ctx):
        # Beat k enters stage 1 with its value and shift in the k-th enabled cycle; its
        # offset goes with it into stage 2, one enabled cycle later.
        k, pending = 0, []
        while len(got) < len(values):
            en = bool(rng.random() < 0.6)
            ctx.set(dut.en, en)
            if k < len(values):
                ctx.set(dut.value, values[k])
                ctx.set(dut.shift, shifts[k])
            if with_offset and pending:
                ctx.set(dut.offset, offsets[pending[0]])
            await ctx.tick()
            if en:
                if len(pending) == ROUND_STAGES - 1:
                    got.append((pending.pop(0), ctx.get(dut.out)))
                if k < len(values):
                    pending.append(k)
                    k += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == len(values)
    for k, out in got:
        want = int(round_shift(values[k], shifts[k])) + (offsets[k] if with_offset else 0)
        want = min(want, hi) if lo is None else max(min(want, hi), lo)
        assert out == want, (values[k], shifts[k], out, want)
