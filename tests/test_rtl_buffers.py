"""Activation buffers and the buffer reader in the Amaranth simulator."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rtl.memory.buffers import Buffer, BufferReader, beat_layout, row_layout


class _Reader(wiring.Component):
    def __init__(self, depth, granules, granule_bits, sub_bits, pitch):
        self.buffer = Buffer(depth, granules, granule_bits, readers=1, writers=1)
        self.reader = BufferReader(self.buffer.addr_bits, self.buffer.word_bits, sub_bits,
                                   pitch, 8, 8)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer, m.submodules.reader = self.buffer, self.reader
        wiring.connect(m, self.reader.bus, self.buffer.r0)
        return m


@pytest.mark.parametrize("granules, granule_bits, sub_bits", [(4, 16, 16), (2, 32, 8), (1, 64, 64)])
@pytest.mark.parametrize("o_flow", [1.0, 0.5])
def test_reader_streams_rows_at_one_beat_per_cycle(granules, granule_bits, sub_bits, o_flow):
    pitch, rows, depth = 3, 6, 18
    word_bits = granules * granule_bits
    per = word_bits // sub_bits
    rng = np.random.default_rng(granules + sub_bits)
    words = [int.from_bytes(rng.bytes(word_bits // 8), "little") for _ in range(depth)]
    dut = _Reader(depth, granules, granule_bits, sub_bits, pitch)
    plan = [(int(r), int(c)) for r, c in zip(rng.permutation(rows), rng.integers(0, per, rows))]
    n_words = 2 * per - 1
    got, times = [], []

    async def bench(ctx):
        w = dut.buffer.w0
        for addr, word in enumerate(words):           # fill through the write client
            ctx.set(w.en, (1 << granules) - 1)
            ctx.set(w.addr, addr)
            ctx.set(w.data, word)
            await ctx.tick()
        ctx.set(w.en, 0)
        ctx.set(dut.reader.words, n_words)
        start = None
        cycle = 0
        pending = list(plan)
        ready_rng = np.random.default_rng(1)
        while len(got) < len(plan) * n_words:
            if pending:
                row, col = pending[0]
                ctx.set(dut.reader.rows.payload, row_layout(8, 8).const(
                    {"row": row, "col": col, "score": row + 1, "last": len(pending) == 1}))
                ctx.set(dut.reader.rows.valid, 1)
            else:
                ctx.set(dut.reader.rows.valid, 0)
            ready = ready_rng.random() < o_flow
            ctx.set(dut.reader.o.ready, ready)
            _, _, taken, valid, payload = await ctx.tick().sample(
                dut.reader.rows.ready, dut.reader.o.valid, dut.reader.o.payload)
            if taken and pending:
                if start is None:
                    start = cycle
                pending.pop(0)
            if valid and ready:
                got.append(beat_layout(sub_bits, 8).from_bits(payload.as_value().value))
                times.append(cycle)
            cycle += 1
        times.insert(0, start)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    n = 0
    for k, (row, col) in enumerate(plan):
        for j in range(n_words):
            column = col + j
            word = words[row * pitch + column // per]
            expected = (word >> (column % per * sub_bits)) & ((1 << sub_bits) - 1)
            beat = got[n]
            assert beat.data == expected and beat.row == row and beat.score == row + 1
            assert beat.end == (j == n_words - 1)
            assert beat.last == (j == n_words - 1 and k == len(plan) - 1)
            n += 1
    start, out = times[0], times[1:]
    if o_flow == 1.0:                             # first beat 3 cycles after its row, then
        assert out == list(range(start + 3, start + 3 + len(out)))      # one per cycle
