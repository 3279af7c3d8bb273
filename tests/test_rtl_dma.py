"""DMA engines on the simulation memory: striped data, cycles equal to the schedule model."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from moevit.schedule import dma_read, dma_write
from rtl.bus.axi import forward, read_signature, write_signature
from rtl.config import AxiPorts
from rtl.memory.dma import DmaReader, DmaWriter, command_layout
from sim.axi_memory import AxiMemory

DEPTH = 4096          # words per memory


class _Harness(wiring.Component):
    """A reader and a writer sharing the memory's ports, as the top does."""

    def __init__(self, axi, init):
        self.axi = axi
        self.reader, self.writer = DmaReader(axi), DmaWriter(axi)
        self.memory = AxiMemory(axi, DEPTH, init)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader, m.submodules.writer = self.reader, self.writer
        m.submodules.memory = self.memory
        for p in range(self.axi.ports):
            port = getattr(self.memory, f"s{p}")
            bus = wiring.flipped(port)
            forward(m, getattr(self.reader, f"m{p}"), bus, read_signature(self.axi.data_bits))
            forward(m, getattr(self.writer, f"m{p}"), bus, write_signature(self.axi.data_bits))
        return m


def _words(memory, axi, address, beats):
    """The load-path words of a striped transfer, from the memory's word list."""
    out = []
    for w in range(beats):
        word = 0
        for p in range(axi.ports):
            index = (address + p * axi.sub_region(beats)) // axi.data_bytes + w
            word |= memory[index] << (p * axi.data_bits)
        out.append(word)
    return out


def _run(axi, transfers, seed):
    rng = np.random.default_rng(seed)
    init = [int.from_bytes(rng.bytes(axi.data_bytes), "little") for _ in range(DEPTH)]
    dut = _Harness(axi, init)
    results = []

    async def bench(ctx):
        memory = list(init)
        cycle = 0
        for kind, address, beats in transfers:
            engine = dut.reader if kind == "read" else dut.writer
            ctx.set(engine.cmd.payload, command_layout.const({"address": address,
                                                               "beats": beats}))
            ctx.set(engine.cmd.valid, 1)
            ctx.set(dut.reader.o.ready, 1)
            data = [int.from_bytes(rng.bytes(axi.path_bytes), "little") for _ in range(beats)]
            got, start, done, fed = [], None, None, 0
            while done is None:
                if kind == "write":
                    ctx.set(dut.writer.i.valid, 1)
                    ctx.set(dut.writer.i.payload, data[min(fed, beats - 1)])
                _, _, taken, valid, word, ready, finished, err = await ctx.tick().sample(
                    engine.cmd.ready, dut.reader.o.valid, dut.reader.o.payload,
                    dut.writer.i.ready, engine.done, engine.error)
                if taken and start is None:
                    start = cycle
                    ctx.set(engine.cmd.valid, 0)
                if kind == "read" and valid:
                    got.append(word)
                if kind == "write" and ready and start is not None and start < cycle:
                    fed += 1
                if finished:
                    done = cycle
                    assert not err
                cycle += 1
                assert cycle < 100_000, "transfer did not finish"
            ctx.set(dut.writer.i.valid, 0)
            if kind == "read":
                assert got == _words(memory, axi, address, beats)
            else:
                for w, word in enumerate(data):
                    for p in range(axi.ports):
                        index = (address + p * axi.sub_region(beats)) // axi.data_bytes + w
                        memory[index] = (word >> (p * axi.data_bits)) & ((1 << axi.data_bits) - 1)
            results.append((kind, address, beats, start, done))
            # Check the written data by reading it back next.
        await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


AXIS = [
    AxiPorts(data_bits=64, ports=1, burst_beats=8, outstanding=2, read_latency=5,
             write_latency=3),
    AxiPorts(data_bits=128, ports=2, burst_beats=16, outstanding=3, read_latency=12,
             write_latency=4),
    AxiPorts(data_bits=64, ports=4, burst_beats=4, outstanding=1, read_latency=2,
             write_latency=2),
]


@pytest.mark.parametrize("axi", AXIS, ids=lambda a: f"{a.ports}x{a.data_bits}")
def test_reads_and_writes_match_memory_and_model(axi):
    rng = np.random.default_rng(axi.ports)
    transfers = []
    for n in range(6):
        beats = int(rng.integers(1, 60))
        span = axi.footprint(beats)
        # Start some transfers a few words before a 4 KB boundary.
        address = int(rng.integers(0, (DEPTH * axi.data_bytes - span) // 4096)) * 4096
        if n % 2:
            address += 4096 - axi.data_bytes * int(rng.integers(1, 5))
            address = min(address, DEPTH * axi.data_bytes - span)
            address -= address % axi.data_bytes
        transfers += [("write", address, beats), ("read", address, beats)]
    transfers.append(("read", 0, 1))
    for kind, address, beats, start, done in _run(axi, transfers, seed=axi.ports):
        if kind == "read":
            assert done == dma_read(axi, start, address, beats), (address, beats)
        else:
            assert done == dma_write(axi, start, address, beats, start + 1), (address, beats)
