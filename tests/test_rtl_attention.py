"""The streaming attention kernel against the golden attention (log2 and log-sqrt2 codes), with its cycle model."""

import numpy as np
import pytest
from amaranth.hdl import Const, Elaboratable, Module, Value
from amaranth.lib import data, memory, wiring
from amaranth.sim import Simulator

from golden.datasets import dataset
from golden.int_model import int_forward, pixels_from_image
from golden.ptq import calibrate
from golden.softmax import ATTENTION_CODES, CODE_ZERO, MANT_CODE_ZERO, mant4_codes, sqrt2_codes
from moevit.packing import pack, unpack
from rtl.compute.attention import (OUT_STAGES, AttentionConfig, AttentionKernel, BackEngine,
                                   BackTiming, FrontEngine, FrontTiming, QueryLoader, beat_layout,
                                   block_layout, exp_cycles, score_layout)
from sim.attention_images import (FixedScale, attention_streams, check_attention, golden_attention,
                                  golden_scores, random_heads)
from sim.flow import FlowPattern
from sim.pysim_stream import run_streams, stream_get, stream_put


def workload(config, heads, n, *, seed=0, shift_scale=0, equal_scores=False, v_fill=None):
    """Seeded q, k, v, mult, shift of ``heads`` heads of ``n`` tokens."""
    rng = np.random.default_rng(seed)
    q, k, v, mult, shift = random_heads(rng, heads, n, config.head_dim)
    if v_fill is not None:
        v[:] = v_fill
    if equal_scores:                           # every key at code 0: the largest denominator
        q[:] = 0
    elif n > 2:
        k[:, 1] = 127                          # a key that dominates some rows: codes of 15
        q[:, 0] = -128
    return q, k, v, mult, shift - shift_scale  # wider scores: more keys reach code 15


def simulate(config, q, k, v, mult, shift, expected, *, seed=0, i_flow=1.0, o_flow=1.0):
    """Run the kernel on (heads, n, head_dim) q, k, v, check ``expected``; return the cycles."""
    kb, vb, qb, count = attention_streams(config, q, k, v)
    dut = FixedScale(AttentionKernel(config), mult, shift)
    res = run_streams(dut, {"k": kb, "v": vb, "q": qb}, {"o": count}, name="attention",
                      i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_attention(config, res["o"][0], expected)
    return res["o"][1][-1] - res["k"][0] + 1


def run(config, heads, n, *, seed=0, i_flow=1.0, o_flow=1.0, **kwargs):
    q, k, v, mult, shift = workload(config, heads, n, seed=seed, **kwargs)
    return simulate(config, q, k, v, mult, shift,
                    golden_attention(q, k, v, mult, shift, config.codes),
                    seed=seed, i_flow=i_flow, o_flow=o_flow)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
@pytest.mark.parametrize("r, dp, h, head_dim, heads, n", [
    (2, 4, 1, 8, 2, 5),          # N not a multiple of R, two head groups
    (4, 8, 2, 8, 2, 4),          # N = R, S = 1 (every slice first and last)
    (3, 2, 1, 4, 1, 1),          # one token
    (2, 8, 3, 32, 3, 7),         # head dim 32, three heads side by side
    (3, 4, 1, 8, 5, 7),          # five head groups: the two V buffers alternate
])
def test_bit_exact_with_gaps_and_backpressure(r, dp, h, head_dim, heads, n, codes):
    config = AttentionConfig(r=r, dp=dp, h=h, head_dim=head_dim, max_tokens=8, codes=codes)
    run(config, heads, n, seed=r + dp, i_flow=0.6, o_flow=0.5)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
@pytest.mark.parametrize("r, dp, h, head_dim, heads, n", [
    (2, 4, 1, 8, 2, 5), (4, 8, 1, 64, 1, 9), (3, 4, 3, 8, 3, 7),
    (8, 4, 1, 8, 4, 5),          # one block per group
])
def test_full_rate_cycles_match_model(r, dp, h, head_dim, heads, n, codes):
    config = AttentionConfig(r=r, dp=dp, h=h, head_dim=head_dim, max_tokens=16, codes=codes)
    assert run(config, heads, n) == exp_cycles(config, n, groups=heads // h)


def test_sqrt2_every_code():
    # Scores spread wide enough that the rows use all 16 log-sqrt2 codes, odd and even.
    config = AttentionConfig(r=4, dp=4, h=1, head_dim=8, max_tokens=32, codes="sqrt2")
    q, k, _, mult, shift = workload(config, 1, 32, seed=3, shift_scale=3)
    u = golden_scores(q, k, mult, shift)[0]
    assert set(np.unique(sqrt2_codes(u))) == set(range(CODE_ZERO + 1))
    run(config, 1, 32, seed=3, shift_scale=3, i_flow=0.8, o_flow=0.7)


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), r"r must be an integer in \[1, 128\], not 0"),
    (dict(dp=5), r"dp must divide head_dim \(64\), not 5"),
    (dict(h=17), r"h must be an integer in \[1, 16\], not 17"),
    (dict(max_tokens=1025), r"max_tokens must be an integer in \[1, 1024\], not 1025"),
    (dict(codes="log3"), r"codes must be one of log2, sqrt2, mant4, not 'log3'"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**{"r": 4, "dp": 8, "h": 1} | kwargs)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_largest_denominator(codes):
    # N = max_tokens keys all at code 0: den = N * 2**14 (log2), N * 2**22 (sqrt2) or
    # N * 2**18 (mant4), a power of two that needs every bit of the denominator (one bit
    # less would wrap to 0).
    config = AttentionConfig(r=4, dp=4, h=1, head_dim=8, max_tokens=64, codes=codes)
    assert config.den_bits == (64 << {"log2": 14, "sqrt2": 22, "mant4": 18}[codes]).bit_length()
    run(config, 1, 64, equal_scores=True)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_largest_numerator(codes):
    # N = max_tokens keys at code 0, all v = -128: num = -N * 128 << lift_max (14, 7 or
    # 18), the most negative numerator; it needs every bit of num_bits.
    config = AttentionConfig(r=4, dp=4, h=1, head_dim=8, max_tokens=64, codes=codes)
    assert config.num_bits == (64 * 128 << {"log2": 14, "sqrt2": 7, "mant4": 18}[codes]).bit_length()
    run(config, 1, 64, equal_scores=True, v_fill=-128)


def test_kernel_takes_a_config():
    with pytest.raises(TypeError, match="config must be an AttentionConfig"):
        AttentionKernel({"r": 4})


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_slow_output_never_lets_a_group_overwrite_a_v_buffer_in_use(codes):
    # Three blocks per group and an output that stalls most cycles: the back lags the front,
    # which loads the next group's V while the back's pass 2 still reads this group's (with
    # one V buffer, the last block of every group would see the next group's V).
    config = AttentionConfig(r=2, dp=4, h=1, head_dim=8, max_tokens=8, codes=codes)
    run(config, 6, 5, seed=11, i_flow=1.0, o_flow=0.1)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_577_tokens(codes):
    # The largest N the issue asks for (ViT-B at 384 x 384), with small heads to keep it quick.
    config = AttentionConfig(r=32, dp=2, h=1, head_dim=2, max_tokens=577, codes=codes)
    assert run(config, 1, 577, seed=5) == exp_cycles(config, 577)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_trained_model_layer(codes):
    # The trained mnist5k MoE-ViT under dual-stage PTQ: block 1's q, k, v of a test image
    # from the golden integer forward give its attention output on the kernel.
    data = dataset("mnist5k")
    cfg = data.config()
    qp = calibrate(cfg, data.load_weights(), data.load_split("calibration")[0], "dual_stage",
                   attention=codes)
    _, trace = int_forward(qp, pixels_from_image(cfg, data.load_split("test")[0][0]), trace=True)
    q, k, v, out = (trace[f"blocks.1.attn.{t}"] for t in ("q", "k", "v", "out"))
    n = cfg.num_tokens
    config = AttentionConfig(r=4, dp=8, h=cfg.num_heads, head_dim=cfg.head_dim, max_tokens=n,
                             codes=codes)
    simulate(config, q, k, v, qp.scalar("blocks.1.attn.scores.mult"),
             qp.scalar("blocks.1.attn.scores.shift"),
             out.reshape(n, cfg.num_heads, cfg.head_dim).transpose(1, 0, 2),
             seed=1, i_flow=0.8, o_flow=0.8)


@pytest.mark.parametrize("codes", ATTENTION_CODES)
def test_blocks_wider_than_64_rows(codes):
    # R = 65 (the u280 preset): 129 tokens in two blocks of 65 and 64 rows, under gaps and
    # backpressure, then at full rate against the cycle model.
    config = AttentionConfig(r=65, dp=2, h=1, head_dim=4, max_tokens=129, codes=codes)
    run(config, 1, 129, seed=7, i_flow=0.7, o_flow=0.6)
    assert run(config, 2, 129, seed=8) == exp_cycles(config, 129, groups=2)


def test_mant4_every_mantissa_and_octave():
    # Scores spread wide enough that the rows use all 64 mantissas, all 15 octaves and the
    # zero code of the mant4 form.
    config = AttentionConfig(r=4, dp=4, h=1, head_dim=8, max_tokens=48, codes="mant4")
    q, k, _, mult, shift = workload(config, 1, 48, seed=3, shift_scale=3)
    codes = mant4_codes(golden_scores(q, k, mult, shift)[0])
    live = codes[codes < MANT_CODE_ZERO]
    assert set(np.unique(live & 63)) == set(range(64))
    assert set(np.unique(live >> 6)) == set(range(CODE_ZERO)) and (codes == MANT_CODE_ZERO).any()
    run(config, 1, 48, seed=3, shift_scale=3, i_flow=0.8, o_flow=0.7)


class _QueryBench(Elaboratable):
    """A :class:`QueryLoader` writing the kernel's Q memory."""

    def __init__(self, config):
        self.config = config
        self.loader = QueryLoader(config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lane = beat_layout(cfg.h, cfg.dp).members["data"]
        m.submodules.loader = self.loader
        m.submodules.qbuf = self.qbuf = memory.Memory(
            shape=data.ArrayLayout(lane, cfg.r), depth=2 * cfg.slices, init=[])
        wiring.connect(m, self.loader.blocks, self.qbuf.write_port(granularity=1))
        return m


@pytest.mark.parametrize("flow", [1.0, 0.5])
def test_query_loader_blocks(flow):
    """Five rows with R = 3: a block of three rows in half 0, then the group's last two
    rows (``last``) in half 1; a third block waits for half 0's release. Every slice of
    every row lands in its half at its row."""
    config = AttentionConfig(r=3, dp=2, h=2, head_dim=4, max_tokens=8)
    rng = np.random.default_rng(5)
    rows = rng.integers(-128, 128, (7, config.slices, config.h, config.dp))
    layout = beat_layout(config.h, config.dp)

    def beats(block, last):
        return [Const.cast(layout.const({"data": row[s].tolist(),
                                         "last": last and n == len(block) - 1
                                         and s == config.slices - 1})).value
                for n, row in enumerate(block) for s in range(config.slices)]

    bench = _QueryBench(config)
    loader = bench.loader
    log = {}

    async def testbench(ctx):
        log["first"] = await stream_put(ctx, loader.q, beats(rows[:5], True),
                                        FlowPattern(flow, seed=1))
        assert ctx.get(loader.full) == 0b11
        log["halves"] = [[ctx.get(bench.qbuf.data[half * config.slices + s])
                          for s in range(config.slices)] for half in range(2)]
        ctx.set(loader.q.payload.as_value(), beats(rows[5:], False)[0])
        ctx.set(loader.q.valid, 1)
        for _ in range(3):                               # half 0 is full: the row waits
            assert not ctx.get(loader.q.ready)
            await ctx.tick()
        ctx.set(loader.release, 0b01)
        await ctx.tick()
        ctx.set(loader.release, 0)
        assert ctx.get(loader.full) == 0b10 and ctx.get(loader.q.ready)
        await stream_put(ctx, loader.q, beats(rows[5:], True), FlowPattern(flow, seed=2))
        await ctx.tick()
        assert ctx.get(loader.full) == 0b11
        log["again"] = [ctx.get(bench.qbuf.data[s]) for s in range(config.slices)]

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    if flow == 1.0:
        assert log["first"] == list(range(5 * config.slices))   # one beat per cycle
    for half, block in ((0, rows[:3]), (1, rows[3:5])):
        for s in range(config.slices):
            for j, row in enumerate(block):
                assert [[log["halves"][half][s][j][hh][d] for d in range(config.dp)]
                        for hh in range(config.h)] == row[s].tolist()
    for s in range(config.slices):
        for j, row in enumerate(rows[5:]):
            assert [[log["again"][s][j][hh][d] for d in range(config.dp)]
                    for hh in range(config.h)] == row[s].tolist()


class _EngineBench(Elaboratable):
    """One engine of the kernel with the V and score memories it shares with the other."""

    def __init__(self, engine):
        self.engine = engine

    def elaborate(self, platform):
        m = Module()
        cfg = self.engine.config
        m.submodules.engine = engine = self.engine
        m.submodules.vbuf = self.vbuf = memory.Memory(
            shape=beat_layout(cfg.h, cfg.dp).members["data"],
            depth=2 * cfg.max_tokens * cfg.slices, init=[])
        m.submodules.ubuf = self.ubuf = memory.Memory(shape=score_layout(cfg),
                                                      depth=2 * cfg.max_tokens, init=[])
        if isinstance(engine, FrontEngine):
            wiring.connect(m, engine.v_write, self.vbuf.write_port())
            wiring.connect(m, engine.scores, self.ubuf.write_port())
        else:
            wiring.connect(m, engine.v_read, self.vbuf.read_port())
            wiring.connect(m, engine.scores, self.ubuf.read_port())
        return m


def _blocks_of(config, groups, n):
    """(group, first row, rows) of every block, in order."""
    return [(g, first, min(config.r, n - first)) for g in range(groups)
            for first in range(0, n, config.r)]


def _engine_case(config, groups, n, seed):
    """A seeded workload of ``groups`` head groups of ``n`` tokens for one engine: q, k, v,
    mult, shift, the requantized scores u (heads, n rows, n keys), the k / v / q beats and
    the output count, and the blocks (:func:`_blocks_of`)."""
    q, k, v, mult, shift = workload(config, groups * config.h, n, seed=seed)
    u = golden_scores(q, k, mult, shift)
    return q, k, v, mult, shift, u, attention_streams(config, q, k, v), _blocks_of(config,
                                                                                 groups, n)


@pytest.mark.parametrize("flow", [1.0, 0.6])
def test_front_engine_writes_scores_and_row_maxima(flow):
    """Two groups of two heads (5 tokens, R = 3: blocks of 3 and 2 rows): at each hand-over
    the score buffer holds the block's requantized scores, ``maxima`` its rows' largest,
    and V the group's rows in the group's buffer. At full rate each hand-over comes in the
    cycle :class:`FrontTiming` gives (the test releases each score buffer the cycle after
    it takes the block)."""
    config = AttentionConfig(r=3, dp=2, h=2, head_dim=4, max_tokens=8)
    n = 5
    q, k, v, mult, shift, u, (kb, vb, qb, _), blocks = _engine_case(config, 2, n, seed=7)
    bench = _EngineBench(FrontEngine(config))
    front = bench.engine
    taken, failures = [], []
    S, NMAX, lane = config.slices, config.max_tokens, beat_layout(config.h, config.dp)

    def sender(name, beats, seed):
        async def bench_(ctx):
            await stream_put(ctx, getattr(front, name), beats, FlowPattern(flow, seed=seed))
        return bench_

    async def consumer(ctx):
        ctx.set(front.mult, mult)
        ctx.set(front.shift, shift)
        pattern, cycle = FlowPattern(flow, seed=9), 0
        for g, first, rows in blocks:
            while True:
                ready = pattern.active()
                ctx.set(front.blocks.ready, ready)
                _, _, valid, word = await ctx.tick().sample(front.blocks.valid,
                                                            front.blocks.payload)
                cycle += 1
                if valid and ready:
                    break
            ctx.set(front.blocks.ready, 0)
            taken.append(cycle - 1)
            got = {key: int(getattr(word, key)) for key in ("par", "rows", "n", "glast", "vpar")}
            if got != {"par": len(taken) % 2 ^ 1, "rows": rows, "n": n,
                       "glast": int(first + rows == n), "vpar": g % 2}:
                failures.append(f"block {len(taken) - 1}: {got}")
            par, hs = got["par"], slice(g * config.h, (g + 1) * config.h)
            words = [unpack(score_layout(config), Const.cast(ctx.get(bench.ubuf.data[
                par * NMAX + j])).value).reshape(config.h, config.r) for j in range(n)]
            scores = np.stack(words, axis=-1)[:, :rows]          # (h, rows, n keys)
            if not np.array_equal(scores, u[hs, first:first + rows]):
                failures.append(f"block {len(taken) - 1}: scores differ")
            maxima = unpack(score_layout(config), Const.cast(ctx.get(
                front.maxima[par])).value).reshape(config.h, config.r)[:, :rows]
            if not np.array_equal(maxima, u[hs, first:first + rows].max(axis=-1)):
                failures.append(f"block {len(taken) - 1}: maxima differ")
            stored = [unpack(lane.members["data"], Const.cast(ctx.get(bench.vbuf.data[
                got["vpar"] * NMAX * S + j])).value) for j in range(n * S)]
            want = [unpack(lane, w)["data"] for w in vb[g * n * S:(g + 1) * n * S]]
            if not all(np.array_equal(a, b) for a, b in zip(stored, want)):
                failures.append(f"group {g}: V buffer differs")
            ctx.set(front.release, 1 << par)
            await ctx.tick()
            cycle += 1
            ctx.set(front.release, 0)

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    for name, beats, seed in (("k", kb, 1), ("v", vb, 2), ("q", qb, 3)):
        sim.add_testbench(sender(name, beats, seed))
    sim.add_testbench(consumer)
    sim.run_until(1e-6 * 2000)
    assert not failures, failures
    assert len(taken) == len(blocks)
    if flow == 1.0:
        timing, expected = FrontTiming(config), []
        for g, first, rows in blocks:
            if first == 0:
                timing.group(n)
            expected.append(timing.block(n, rows) + 1)
            timing.handed_over(expected[-1], expected[-1] + 1)
        assert taken == expected


@pytest.mark.parametrize("codes", ATTENTION_CODES)
@pytest.mark.parametrize("flow", [1.0, 0.5])
def test_back_engine_finishes_blocks(codes, flow):
    """Blocks handed over with their scores, maxima and V in place (two groups, the V
    buffers alternating): the rows equal the golden attention, each score buffer is
    released after its pass 2, and at full rate every release and last output beat comes
    in the cycle :class:`BackTiming` gives for the cycle the block was taken."""
    config = AttentionConfig(r=3, dp=2, h=2, head_dim=4, max_tokens=8, codes=codes)
    groups, n = 2, 5
    q, k, v, mult, shift, u, (_, vb, _, count), blocks = _engine_case(config, groups, n, 11)
    bench = _EngineBench(BackEngine(config))
    back = bench.engine
    S, NMAX = config.slices, config.max_tokens
    lane, scores = beat_layout(config.h, config.dp).members["data"], score_layout(config)
    offered, taken, releases, log = [], [], [], {}

    async def front(ctx):
        for g in range(groups):
            for j in range(n * S):
                ctx.set(bench.vbuf.data[(g % 2) * NMAX * S + j], lane.from_bits(
                    vb[g * n * S + j] & ((1 << lane.size) - 1)))
        pattern, cycle, owed = FlowPattern(flow, seed=4), 0, set()
        for b, (g, first, rows) in enumerate(blocks):
            par, hs = b % 2, slice(g * config.h, (g + 1) * config.h)
            while par in owed or not pattern.active():   # the buffer is back, and a gap
                ctx.set(back.blocks.valid, 0)
                _, _, released = await ctx.tick().sample(back.release)
                cycle += 1
                owed -= {p for p in range(2) if released >> p & 1}
            block = np.zeros((config.h, config.r, n), np.int64)
            block[:, :rows] = u[hs, first:first + rows]
            for j in range(n):
                ctx.set(bench.ubuf.data[par * NMAX + j], scores.from_bits(pack(
                    scores, block[:, :, j])))
            ctx.set(back.maxima[par], scores.from_bits(pack(scores, np.where(
                np.arange(config.r) < rows, block.max(axis=-1), 0))))
            ctx.set(Value.cast(back.blocks.payload), pack(block_layout(config), {
                "par": par, "rows": rows, "n": n, "glast": int(first + rows == n),
                "vpar": g % 2}))
            ctx.set(back.blocks.valid, 1)
            offered.append(cycle)
            while True:
                _, _, ready, released = await ctx.tick().sample(back.blocks.ready, back.release)
                cycle += 1
                owed -= {p for p in range(2) if released >> p & 1}
                if ready:
                    break
            taken.append(cycle - 1)
            owed.add(par)
        ctx.set(back.blocks.valid, 0)

    async def monitor(ctx):
        cycle = 0
        async for _, _, released in ctx.tick().sample(back.release):
            if released:
                releases.append(cycle)
            cycle += 1

    async def sink(ctx):
        log["o"] = await stream_get(ctx, back.o, count, FlowPattern(flow, seed=6))

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(front)
    sim.add_process(monitor)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * 2000)
    words, cycles = log["o"]
    check_attention(config, words, golden_attention(q, k, v, mult, shift, codes))
    assert len(releases) == len(blocks)
    if flow == 1.0:
        # The model takes each block from the cycle it is offered: an idle back takes it
        # at once, a busy one the cycle after its last output issue.
        timing, beats = BackTiming(config), 0
        for (g, first, rows), offer, take, release in zip(blocks, offered, taken, releases):
            beats += rows * S
            assert timing.block(offer - 1, n, rows) == (take, release,
                                                         cycles[beats - 1] - OUT_STAGES)
