"""cocotb driver and monitor for ``amaranth.lib.stream`` ports of emitted Verilog.

A stream port ``i`` of a component appears in Verilog as ``i__valid``,
``i__ready`` and ``i__payload`` (one flat vector, element 0 at the LSB). The
source drives everything but ready; the sink drives only ready (as in
cocotbext-axi). Gaps and backpressure come from :class:`sim.flow.FlowPattern`.

Handshake sampling (correct on Icarus and Verilator): drive, ``await
ReadOnly()``, read, ``await RisingEdge(clk)``; the beat transferred at that
edge iff valid and ready were both 1 in the read-only phase.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from .flow import FlowPattern

__all__ = ["StreamSource", "StreamSink", "start_clock_and_reset", "run_streams"]


async def start_clock_and_reset(dut, cycles=2):
    """Start a 100 MHz clock on ``dut.clk`` and hold ``dut.rst`` for ``cycles`` cycles."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


class _StreamEnd:
    def __init__(self, dut, name, pattern):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.pattern = pattern


class StreamSource(_StreamEnd):
    """Drives payload words into a stream with random valid gaps."""

    def __init__(self, dut, name, pattern):
        super().__init__(dut, name, pattern)
        self.valid.value = 0

    async def send(self, words):
        """Send ``words`` (ints); return the cycle (counted from the call) of each transfer."""
        cycles, cycle = [], 0
        for word in words:
            while not self.pattern.active():
                self.valid.value = 0
                await RisingEdge(self.clk)
                cycle += 1
            self.payload.value = word
            self.valid.value = 1
            while True:
                await ReadOnly()
                ready = self.ready.value == 1
                await RisingEdge(self.clk)
                cycle += 1
                if ready:
                    break
            cycles.append(cycle - 1)
        self.valid.value = 0
        return cycles


class StreamSink(_StreamEnd):
    """Collects payload words from a stream with random ready backpressure."""

    def __init__(self, dut, name, pattern):
        super().__init__(dut, name, pattern)
        self.ready.value = 0

    async def receive(self, count, progress=None):
        """Receive ``count`` words; return (words, cycle of each transfer counted from the call).

        ``progress``, if given, is called with the number of words received so far
        after every word.
        """
        words, cycles, cycle = [], [], 0
        while len(words) < count:
            ready = self.pattern.active()
            self.ready.value = int(ready)
            await ReadOnly()
            valid = self.valid.value == 1
            word = self.payload.value.to_unsigned() if valid and ready else None
            await RisingEdge(self.clk)
            if word is not None:
                words.append(word)
                cycles.append(cycle)
                if progress is not None:
                    progress(len(words))
            cycle += 1
        self.ready.value = 0
        return words, cycles


async def run_streams(dut, sources, sinks, *, i_flow=1.0, o_flow=1.0, seed=0, progress=None):
    """Drive several input streams and collect several output streams at once.

    Mirrors :func:`sim.pysim_stream.run_streams`: ``sources`` maps stream names to
    payload words, ``sinks`` maps stream names to word counts, every stream gets
    its own flow pattern seeded from ``seed``. ``progress(name, done, total)`` is
    called after every received word. Returns the transfer cycles of every
    source and (words, cycles) of every sink, all counted from the same start.
    """
    tasks = {}
    for n, (name, words) in enumerate(sources.items()):
        source = StreamSource(dut, name, FlowPattern(i_flow, seed + 2 * n))
        tasks[name] = cocotb.start_soon(source.send(words))
    for n, (name, count) in enumerate(sinks.items()):
        sink = StreamSink(dut, name, FlowPattern(o_flow, seed + 2 * n + 1))
        report = progress and (lambda done, name=name, count=count: progress(name, done, count))
        tasks[name] = cocotb.start_soon(sink.receive(count, report))
    return {name: await task for name, task in tasks.items()}
