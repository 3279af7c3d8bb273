"""Unit tests of the linear kernel in Amaranth's simulator, against the golden spec."""

import numpy as np
import pytest

from amaranth.hdl import Const, Elaboratable, Module
from amaranth.lib import data, memory, wiring
from amaranth.sim import Simulator

from moevit.images import matrix_image
from golden.gelu import gelu_int
from golden.quant import requantize
from rtl.compute.linear import (OUTPUT_STAGES, LinearConfig, LinearKernel, OutMode,
                                OutputPipeline, WeightLoader, channel_layout, exp_cycles,
                                image_beats, tile_layout, y_layout)
from rtl.compute.systolic import result_layout
from sim.flow import FlowPattern
from sim.linear_images import check_outputs, job_image, job_streams, random_job
from sim.pysim_stream import run_streams, stream_put

N_TOKENS = 12


def run_jobs(config, jobs, x, *, seed=0, i_flow=1.0, o_flow=1.0):
    """Run jobs on the kernel; check every row and score; return the cycle count."""
    w_beats, x_beats, y_count = job_streams(config, jobs, x)
    res = run_streams(LinearKernel(config), {"w": w_beats, "x": x_beats}, {"y": y_count},
                      name=f"linear_{config.pi}x{config.po}x{config.t}", seed=seed,
                      i_flow=i_flow, o_flow=o_flow)
    words, cycles = res["y"]
    check_outputs(config, jobs, x, words)
    return cycles[-1] + 1


@pytest.mark.parametrize("pi, po, t, bus, packing", [
    (4, 4, 3, 64, False), (2, 3, 2, 64, True), (3, 2, 1, 128, False),
])
@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.5, 0.6), (1.0, 0.2)])
def test_job_sequence_bit_exact(pi, po, t, bus, packing, i_flow, o_flow):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=16, max_out=12, bus_width=bus,
                          dsp_packing=packing, out_width=32)
    rng = np.random.default_rng(pi * 10 + po)
    x = rng.integers(-128, 128, (N_TOKENS, 16))
    jobs = [
        random_job(rng, 16, 12, range(N_TOKENS), bits=8, gelu=True),  # largest, all tokens
        random_job(rng, 5, 7, [3], bits=16),     # one token, dims not multiples of PI/PO
        random_job(rng, 16, 1, [11, 0, 5, 7]),   # gather in any order, T not dividing 4
        random_job(rng, 1, 12, [2, 9], bits=8),
        random_job(rng, 9, 12, range(0, N_TOKENS, 2), bits=8, gelu=True),
        random_job(rng, 16, 12, [1, 4, 6], bits=8, gelu=True),  # table reloaded per bank
    ]
    run_jobs(config, jobs, x, seed=pi * 10 + po, i_flow=i_flow, o_flow=o_flow)


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_requantizer_saturates_at_both_ends(bits):
    config = LinearConfig(pi=4, po=4, t=2, max_in=8, max_out=8, bus_width=64, out_width=32)
    rng = np.random.default_rng(bits)
    x = np.array([[127] * 8, [-128] * 8, [0] * 8, [1] * 8])
    weight = np.array([[127] * 8, [-128] * 8] * 4)
    jobs = [
        # A huge gain: every non-zero output saturates (int32 mode saturates a 2**40 product).
        {"weight": weight, "bias": np.zeros(8, int), "mult": 32767, "shift": 0, "zero_point": 0,
         "bits": bits, "gelu_table": None, "tokens": [0, 1, 2, 3], "scores": np.arange(4)},
        # Halves round up on both signs: acc + bias = +-1 with shift 1.
        {"weight": np.zeros((8, 8), int), "bias": np.array([1, -1, 3, -3, 5, -5, 0, 2]),
         "mult": 1, "shift": 1, "zero_point": int(rng.integers(-3, 4)), "bits": bits,
         "gelu_table": None, "tokens": [2], "scores": [255]},
        # The largest shift and multiplier.
        {"weight": weight, "bias": np.full(8, 1 << 30), "mult": 32767, "shift": 47,
         "zero_point": 0, "bits": bits, "gelu_table": None, "tokens": [0, 1], "scores": [7, 9]},
    ]
    run_jobs(config, jobs, x, o_flow=0.5)


def test_gelu_table_exhaustive_over_int8_codes():
    # Identity weights and unit requantizer: the 256 codes -128..127 reach the table.
    config = LinearConfig(pi=4, po=4, t=3, max_in=4, max_out=4, bus_width=256)
    rng = np.random.default_rng(7)
    codes = np.arange(-128, 128).reshape(64, 4)
    jobs = [{"weight": np.eye(4, dtype=int), "bias": np.zeros(4, int), "mult": 1, "shift": 0,
             "zero_point": 0, "bits": 8, "gelu_table": rng.integers(-128, 128, 256),
             "tokens": list(range(64)), "scores": rng.integers(0, 256, 64)} for _ in range(3)]
    run_jobs(config, jobs, codes, i_flow=0.7, o_flow=0.7)


@pytest.mark.parametrize("pi, po, t, shapes", [
    (4, 4, 3, [(16, 8, 10, False)]),
    (4, 4, 3, [(8, 12, 1, True)]),
    (4, 4, 3, [(16, 12, 9, True), (16, 12, 9, False)]),
    (4, 4, 3, [(4, 12, 9, False)]),                     # KB < T: tile spacing bound
    (2, 4, 2, [(16, 12, 7, True), (6, 12, 5, True), (16, 4, 9, True)]),
    (4, 2, 4, [(16, 2, 12, False)]),                    # NB = 1: token-load bound
    (4, 4, 1, [(4, 4, 1, True)] * 4),                   # tiny gelu jobs: tables wait for outputs
])
def test_full_rate_cycles_match_model(pi, po, t, shapes):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=16, max_out=12, bus_width=64)
    rng = np.random.default_rng(pi + po + t)
    x = rng.integers(-128, 128, (N_TOKENS, 16))
    jobs = [random_job(rng, d_in, d_out, range(n), bits=8, gelu=gelu)
            for d_in, d_out, n, gelu in shapes]
    assert run_jobs(config, jobs, x) == exp_cycles(config, shapes)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pi=0), r"pi must be an integer in \[1, 64\], not 0"),
    (dict(po=65), r"po must be an integer in \[1, 64\], not 65"),
    (dict(t=17), r"t must be an integer in \[1, 16\], not 17"),
    (dict(t=1.5), r"t must be an integer in \[1, 16\], not 1.5"),
    (dict(max_in=0), r"max_in must be an integer in \[1, 65535\], not 0"),
    (dict(max_weight_words=17), r"max_weight_words must be an integer in \[1, 16\], not 17"),
    (dict(bus_width=32), r"bus_width must be an integer in \[64, 4096\], not 32"),
    (dict(dsp_packing=1), r"dsp_packing must be a bool, not 1"),
    (dict(gelu=None), r"gelu must be a bool, not None"),
    (dict(out_width=12), r"out_width must be 8, 16 or 32, not 12"),
])
def test_invalid_parameters_are_named(kwargs, message):
    params = dict(pi=4, po=4, t=2, max_in=16, max_out=16, bus_width=64) | kwargs
    with pytest.raises(ValueError, match=message):
        LinearConfig(**params)


def test_matrix_that_does_not_fit_is_named():
    config = LinearConfig(pi=4, po=4, t=2, max_in=16, max_out=16, max_weight_words=8)
    with pytest.raises(ValueError, match=r"matrix blocks.1.mlp.fc1 \(16 -> 16\) does not fit "
                                         r"the kernel: .* = 16 weight words at most 8"):
        matrix_image(config, "blocks.1.mlp.fc1", np.zeros((16, 16), int), np.zeros(16, int))


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=32), r"bits of fc must be 8, 16 or 32 and at most the kernel's out_width 16, not 32"),
    (dict(bits=16, mult=1 << 15), r"mult of fc must be in \[0, 32767\], found \[32768, 32768\]"),
    (dict(bits=16, shift=48), r"shift of fc must be in \[0, 47\]"),
    (dict(bits=8, zero_point=128), r"zero_point of fc must be in \[-128, 127\]"),
    (dict(bits=16, gelu_table=np.zeros(256, int)), r"gelu_table of fc needs .* bits=8"),
    (dict(bits=8, gelu_table=np.zeros(255, int)), r"gelu_table of fc must have 256 entries, not shape \(255,\)"),
])
def test_bad_requantizer_parameters_are_named(kwargs, message):
    config = LinearConfig(pi=4, po=4, t=2, max_in=8, max_out=8, bus_width=64)
    with pytest.raises(ValueError, match=message):
        matrix_image(config, "fc", np.zeros((8, 8), int), np.zeros(8, int), **kwargs)


def test_kernel_without_gelu_stage():
    # A kernel built without the table stage (gelu=False) still requantizes bit-exactly.
    config = LinearConfig(pi=4, po=4, t=2, max_in=8, max_out=8, bus_width=64, gelu=False)
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (N_TOKENS, 8))
    jobs = [random_job(rng, 8, 8, range(5), bits=8), random_job(rng, 5, 3, [7, 2], bits=16)]
    assert run_jobs(config, jobs, x, o_flow=0.6) > 0
    with pytest.raises(ValueError, match=r"gelu_table of fc needs a kernel built with gelu=True"):
        matrix_image(config, "fc", np.zeros((8, 8), int), np.zeros(8, int), bits=8,
                     gelu_table=np.zeros(256, int))


def test_kernel_takes_a_config():
    with pytest.raises(TypeError, match="config must be a LinearConfig"):
        LinearKernel(dict(pi=4))


class _LoaderBench(Elaboratable):
    """A :class:`WeightLoader` writing into the kernel's three memories."""

    def __init__(self, config):
        self.config = config
        self.loader = WeightLoader(config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.loader = loader = self.loader
        m.submodules.weights = self.weights = memory.Memory(
            shape=cfg.weight_layout, depth=2 * cfg.max_weight_words, init=[])
        m.submodules.channels = self.channels = memory.Memory(
            shape=channel_layout(cfg.po), depth=2 * cfg.nb_max, init=[])
        m.submodules.table = self.table = memory.Memory(
            shape=cfg.table_layout, depth=2 * cfg.table_beats, init=[])
        wiring.connect(m, loader.weights, self.weights.write_port())
        wiring.connect(m, loader.channels, self.channels.write_port())
        wiring.connect(m, loader.table, self.table.write_port())
        return m


@pytest.mark.parametrize("pi, po, bus, flow", [(4, 3, 64, 1.0), (3, 5, 128, 0.5),
                                               (8, 8, 64, 0.7)])
def test_weight_loader_fills_banks_in_turn(pi, po, bus, flow):
    """Three images: banks 0 and 1 fill, the third waits for bank 0's release. Every word
    lands where the layouts say; at full rate an image takes image_beats cycles."""
    config = LinearConfig(pi=pi, po=po, t=2, max_in=16, max_out=12, bus_width=bus)
    rng = np.random.default_rng(pi * 100 + po)
    jobs = [random_job(rng, 16, 12, [0], bits=8, gelu=True),
            random_job(rng, 5, 7, [0], bits=16),
            random_job(rng, 9, 12, [0], bits=8, gelu=True)]
    images = [job_image(config, f"job {n}", job) for n, job in enumerate(jobs)]
    bench = _LoaderBench(config)
    loader = bench.loader
    pattern = FlowPattern(flow, seed=pi)
    log = {}

    async def testbench(ctx):
        log["first"] = await stream_put(ctx, loader.w, images[0] + images[1], pattern)
        assert ctx.get(loader.full) == 0b11 and ctx.get(loader.table_busy) == 0b01
        for _ in range(5):                          # bank 0 is full: the header waits
            ctx.set(loader.w.payload, images[2][0])
            ctx.set(loader.w.valid, 1)
            assert not ctx.get(loader.w.ready)
            await ctx.tick()
        ctx.set(loader.release, 0b01)
        ctx.set(loader.table_release, 0b01)       # its table is no longer read either
        await ctx.tick()
        ctx.set(loader.release, 0)
        ctx.set(loader.table_release, 0)
        assert ctx.get(loader.full) == 0b10 and ctx.get(loader.table_busy) == 0
        log["third"] = await stream_put(ctx, loader.w, images[2], pattern)
        await ctx.tick()
        assert ctx.get(loader.full) == 0b11 and ctx.get(loader.table_busy) == 0b01
        log["memories"] = {
            name: [ctx.get(mem.data[a]) for a in range(mem.depth)]
            for name, mem in (("weights", bench.weights), ("channels", bench.channels),
                              ("table", bench.table))}
        log["headers"] = [ctx.get(loader.headers[b]) for b in range(2)]

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    if flow == 1.0:
        first = log["first"]
        assert first == list(range(len(images[0]) + len(images[1])))   # never stalled
        assert len(images[0]) == image_beats(config, -(-16 // pi), -(-12 // po), gelu=True)
    mem = log["memories"]
    for bank, job in ((0, jobs[2]), (1, jobs[1])):
        d_out, d_in = job["weight"].shape
        kb, nb = -(-d_in // pi), -(-d_out // po)
        header = log["headers"][bank]
        assert (header.kb, header.nb, header.zero_point, header.gelu) == \
            (kb, nb, job["zero_point"], job["gelu_table"] is not None)
        for j in range(nb):
            channels = mem["channels"][bank * config.nb_max + j]    # read as its layout
            for s in range(kb):
                word = mem["weights"][bank * config.max_weight_words + j * kb + s]
                for c in range(min(po, d_out - j * po)):
                    row = job["weight"][j * po + c]
                    assert [word[c][i] for i in range(min(pi, d_in - s * pi))] == \
                        list(row[s * pi:s * pi + pi])
            for c in range(min(po, d_out - j * po)):
                assert channels.bias[c] == job["bias"][j * po + c]
                assert channels.mult[c] == np.broadcast_to(job["mult"], d_out)[j * po + c]
                assert channels.shift[c] == np.broadcast_to(job["shift"], d_out)[j * po + c]
        if job["gelu_table"] is not None:
            per = config.entries_per_beat
            entries = [mem["table"][bank * config.table_beats + b][e]
                       for b in range(config.table_beats) for e in range(per)]
            assert entries == list(job["gelu_table"])


class _PipelineBench(Elaboratable):
    """An :class:`OutputPipeline` reading two GELU tables from a memory."""

    def __init__(self, config, tables):
        self.config, self.tables = config, tables
        self.pipeline = OutputPipeline(config)
        self.acc, self.tile, self.y = self.pipeline.acc, self.pipeline.tile, self.pipeline.y

    def elaborate(self, platform):
        m = Module()
        cfg, per = self.config, self.config.entries_per_beat
        m.submodules.pipeline = pipeline = self.pipeline
        words = [list(table[b * per:(b + 1) * per])
                 for table in self.tables for b in range(cfg.table_beats)]
        m.submodules.table = table = memory.Memory(shape=cfg.table_layout, depth=len(words),
                                                   init=words)
        for lane in pipeline.table:
            wiring.connect(m, table.read_port(), lane)
        return m


@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.6, 0.5), (1.0, 0.3)])
def test_output_pipeline_bit_exact(i_flow, o_flow):
    """Random tiles (padding rows, all three modes, GELU from either bank, accumulators
    past every saturation edge, batch ends) through the pipeline alone: every kept row
    equals golden.quant.requantize (then golden.gelu.gelu_int), ``last`` on a batch's
    final row; at full rate each row leaves OUTPUT_STAGES cycles after it enters."""
    config = LinearConfig(pi=2, po=3, t=3, max_in=8, max_out=9, out_width=32)
    rng = np.random.default_rng(7)
    tables = [rng.integers(-128, 128, 256), rng.integers(-128, 128, 256)]
    acc_rows, tiles, expected, kept = [], [], [], []
    for n in range(24):
        rows = int(rng.integers(1, config.t + 1))
        bits = int(rng.choice([8, 16, 32]))
        gelu = bits == 8 and bool(rng.integers(2))
        bank = n % 2
        last = bool(rng.integers(2))            # the tile ends its batch
        zero_point = int(rng.integers(-20, 20))
        bias = rng.integers(-(1 << 20), 1 << 20, config.po)
        mult = rng.integers(0, 1 << 15, config.po)
        shift = rng.integers(0, 48, config.po)
        tokens = rng.integers(0, 1 << 16, config.t)
        scores = rng.integers(0, 256, config.t)
        tiles.append(Const.cast(tile_layout(config).const({
            "info": {"tokens": tokens.tolist(), "scores": scores.tolist(), "rows": rows,
                     "fold": n, "last": last,
                     "bank": bank, "zero_point": zero_point,
                     "mode": {8: OutMode.INT8, 16: OutMode.INT16, 32: OutMode.INT32}[bits],
                     "gelu": gelu},
            "channels": {"bias": bias.tolist(), "mult": mult.tolist(),
                         "shift": shift.tolist()}})).value)
        for r in range(config.t):
            acc = rng.integers(-(1 << 31) + (1 << 20), (1 << 31) - (1 << 20), config.po) \
                >> int(rng.integers(0, 31))
            acc_rows.append(Const.cast(result_layout(config.po).const(
                {"acc": acc.tolist(), "last": r == config.t - 1})).value)
            if r < rows:
                kept.append(len(acc_rows) - 1)
                out = requantize(acc + bias, mult, shift, zero_point, bits)
                if gelu:
                    out = gelu_int(out, tables[bank])
                expected.append((int(tokens[r]), int(scores[r]), n,
                                 last and r == rows - 1, list(out)))
    bench = _PipelineBench(config, tables)
    res = run_streams(bench, {"acc": acc_rows, "tile": tiles}, {"y": len(expected)},
                      name="output_pipeline", seed=3, i_flow=i_flow, o_flow=o_flow)
    words, cycles = res["y"]
    layout = y_layout(config.po, config.out_width)
    got = [(b.token, b.score, b.fold, bool(b.last), [b.data[c] for c in range(config.po)])
           for b in (data.Const(layout, w) for w in words)]
    assert got == expected
    if i_flow == o_flow == 1.0:
        assert cycles == [res["acc"][k] + OUTPUT_STAGES for k in kept]
