"""Stream helpers for Amaranth's own simulator (fast unit tests of submodules).

``stream_put`` and ``stream_get`` drive and monitor an ``amaranth.lib.stream``
interface with seeded random valid gaps and ready backpressure (see
:mod:`sim.flow`). :func:`run_stream_test` wires them up and returns plain data,
so a test reads ``rtl_fn(x) == ref_fn(x)``.
"""

from amaranth.hdl import Value
from amaranth.sim import Simulator

from .flow import FlowPattern
from .waves import waves_dir, waves_requested

__all__ = ["stream_put", "stream_get", "run_streams", "run_stream_test", "StreamResult"]


async def stream_put(ctx, stream, words, pattern):
    """Send payload ``words`` (ints) on ``stream``; return the cycle of each transfer."""
    cycles, cycle = [], 0
    for word in words:
        while not pattern.active():
            ctx.set(stream.valid, 0)
            await ctx.tick()
            cycle += 1
        ctx.set(Value.cast(stream.payload), word)
        ctx.set(stream.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycle += 1
            if ready:
                break
        cycles.append(cycle - 1)
    ctx.set(stream.valid, 0)
    return cycles


async def stream_get(ctx, stream, count, pattern):
    """Receive ``count`` payload words from ``stream``; return (words, transfer cycles)."""
    words, cycles, cycle = [], [], 0
    while len(words) < count:
        ready = pattern.active()
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, Value.cast(stream.payload))
        if valid and ready:
            words.append(payload)
            cycles.append(cycle)
        cycle += 1
    ctx.set(stream.ready, 0)
    return words, cycles


class StreamResult:
    """Output words and the cycle of every input and output transfer (cycle 0 = first tick)."""

    def __init__(self, words, in_cycles, out_cycles):
        self.words = words
        self.in_cycles = in_cycles
        self.out_cycles = out_cycles

    @property
    def cycles(self):
        """Cycles from the first input transfer to the last output transfer, inclusive."""
        if not self.out_cycles:
            return 0
        return self.out_cycles[-1] - self.in_cycles[0] + 1


def run_streams(dut, sources, sinks, *, name, i_flow=1.0, o_flow=1.0, seed=0, deadline=None):
    """Simulate ``dut`` with several stream sources and sinks at once.

    Parameters
    ----------
    sources : dict of str -> list of int
        Payload words to send on each input stream (by member name).
    sinks : dict of str -> int
        How many words to collect from each output stream.
    i_flow, o_flow : float
        Probability that a source offers data / a sink is ready in a cycle;
        every stream gets its own pattern, seeded from ``seed``.
    deadline : int, optional
        Bound on simulated cycles (default: generous, from the word counts).

    Returns
    -------
    dict of str -> list of int
        The transfer cycles of every source, and (words, cycles) of every sink.
    """
    result = {}
    streams = [*sources, *sinks]

    def source_bench(key, words, pattern):
        async def bench(ctx):
            result[key] = await stream_put(ctx, getattr(dut, key), words, pattern)
        return bench

    def sink_bench(key, count, pattern):
        async def bench(ctx):
            result[key] = await stream_get(ctx, getattr(dut, key), count, pattern)
        return bench

    if deadline is None:
        total = sum(len(w) for w in sources.values()) + sum(sinks.values())
        deadline = 200 + 20 * total / min(i_flow, o_flow)

    async def watchdog(ctx):
        for _ in range(int(deadline)):
            await ctx.tick()
        raise AssertionError(f"{name}: simulation did not finish within {deadline:.0f} cycles "
                             f"(streams still open: {[k for k in streams if k not in result]})")

    def simulate(vcd):
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        for n, (key, words) in enumerate(sources.items()):
            sim.add_testbench(source_bench(key, words, FlowPattern(i_flow, seed + 2 * n)))
        for n, (key, count) in enumerate(sinks.items()):
            sim.add_testbench(sink_bench(key, count, FlowPattern(o_flow, seed + 2 * n + 1)))
        sim.add_testbench(watchdog, background=True)
        if vcd is None:
            sim.run()
        else:
            with sim.write_vcd(str(vcd)):
                sim.run()

    if waves_requested():
        simulate(waves_dir(name) / "pysim.vcd")
    else:
        try:
            simulate(None)
        except AssertionError as exc:
            vcd = waves_dir(name) / "pysim.vcd"
            result.clear()
            try:
                simulate(vcd)
            except AssertionError:
                pass
            raise AssertionError(f"{exc} (waveform: {vcd})") from exc
    return result


def run_stream_test(dut, words, out_count, *, name, i_flow=1.0, o_flow=1.0, seed=0,
                    i="i", o="o", deadline=None):
    """Simulate ``dut``: feed ``words`` into stream ``i``, collect ``out_count`` words from ``o``.

    See :func:`run_streams`; returns a :class:`StreamResult`.
    """
    result = run_streams(dut, {i: words}, {o: out_count}, name=name, i_flow=i_flow,
                         o_flow=o_flow, seed=seed, deadline=deadline)
    words_out, out_cycles = result[o]
    return StreamResult(words_out, result[i], out_cycles)
