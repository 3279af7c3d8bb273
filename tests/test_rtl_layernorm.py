"""The streaming LayerNorm unit against golden.layernorm.int_layernorm."""

import numpy as np
import pytest
from amaranth.hdl import Const, Elaboratable, Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from golden.layernorm import int_layernorm
from rtl.compute.layernorm import (OUT_LATENCY, STATS_LATENCY, LayerNormUnit, ParamLoader,
                                   channel_layout, exp_cycles, param_layout, plan)
from sim.flow import FlowPattern
from sim.nonlinear_images import check_layernorm, layernorm_batch, layernorm_streams
from sim.pysim_stream import run_streams, stream_put


def run_batches(batches, d, lanes, *, i_flow=1.0, o_flow=1.0, seed=0):
    p_words, i_words, count = layernorm_streams(batches, d, lanes)
    res = run_streams(LayerNormUnit(d, lanes), {"p": p_words, "i": i_words}, {"o": count},
                      name=f"layernorm_{d}_{lanes}", i_flow=i_flow, o_flow=o_flow, seed=seed)
    check_layernorm(res["o"][0], batches, d, lanes)
    return res


@pytest.mark.parametrize("d, lanes", [(6, 1), (6, 3), (192, 4), (384, 2), (192, 16), (192, 32)])
def test_bit_exact_with_gaps_and_backpressure(d, lanes):
    rng = np.random.default_rng(d + lanes)
    batches = [layernorm_batch(rng, 5, d, extremes=True), layernorm_batch(rng, 1, d),
               layernorm_batch(rng, 4, d)]
    run_batches(batches, d, lanes, i_flow=0.6, o_flow=0.5, seed=d)


def test_a_batch_waits_for_its_own_parameters_not_the_older_batchs_in_that_bank():
    # Found by make fuzz: short batches with different shifts, a slow sink. Batch n + 2 must
    # not take in tokens while bank n % 2 still holds batch n's parameters (unreleased until
    # batch n's output has read them): it took them, and its first beat used the old shift.
    rng = np.random.default_rng(3)
    batches = [layernorm_batch(rng, n, 8) for n in (3, 1, 1, 2, 1, 2)]
    for n, b in enumerate(batches):
        b["shift"] = 17 + n % 3
        b["y"] = int_layernorm(b["x"], b["gain"], b["bias"], b["shift"], b["eps"])
    for seed in range(4):
        run_batches(batches, 8, 2, i_flow=1.0, o_flow=0.3, seed=seed)


def test_parameter_banks_under_heavy_backpressure():
    # One-beat tokens and a slow sink: the next images wait for their banks.
    rng = np.random.default_rng(11)
    batches = [layernorm_batch(rng, n, 4, extremes=n >= 3) for n in (3, 1, 2, 4, 1)]
    run_batches(batches, 4, 4, i_flow=0.9, o_flow=0.2, seed=2)


@pytest.mark.parametrize("d, lanes, tokens", [
    (192, 1, 5), (192, 4, 6), (8, 2, 7), (384, 16, 4), (192, 16, 6), (4, 4, 6), (384, 3, 3),
    (192, 32, 7), (384, 32, 5)])
def test_full_rate_cycles_match_model(d, lanes, tokens):
    rng = np.random.default_rng(tokens)
    res = run_batches([layernorm_batch(rng, tokens, d)], d, lanes)
    # Parameters arrive first; count from the first token beat.
    assert res["o"][1][-1] - res["i"][0] + 1 == exp_cycles(d, lanes, tokens)


@pytest.mark.parametrize("d", [192, 384])
@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 8, 16])
def test_steady_state_one_beat_per_cycle(d, lanes):
    beats = d // lanes if d % lanes == 0 else None
    if beats is None:
        pytest.skip("d not a multiple of lanes")
    assert exp_cycles(d, lanes, 11) - exp_cycles(d, lanes, 10) == beats
    p = plan(d, lanes)
    assert max(p.sqrt_latency, p.recip_latency) <= beats and p.slots <= 4
    # One token on an idle unit: its beats in, its statistics, the square root and the
    # reciprocal, its beats read, the output pipeline.
    assert exp_cycles(d, lanes, 1) == (2 * beats + STATS_LATENCY + p.sqrt_latency
                                       + p.recip_latency + OUT_LATENCY)


def test_short_tokens_go_at_the_square_root_pace():
    p = plan(32, 16)                          # two beats: the digit-serial units bound it
    assert p.sqrt_digits == 4 and p.recip_digits == 4
    period = exp_cycles(32, 16, 11) - exp_cycles(32, 16, 10)
    assert period == max(p.sqrt_latency, p.recip_latency)


@pytest.mark.parametrize("args, message", [
    ((192, 5), r"d must be a multiple of lanes \(5\), not 192"),
    ((1, 1), r"d must be an integer in \[2, 1024\], not 1"),
    ((2048, 1), r"d must be an integer in \[2, 1024\], not 2048"),
    ((192, 0), r"lanes must be an integer in \[1, 32\], not 0"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        LayerNormUnit(*args)


class _ParamBench(Elaboratable):
    """A :class:`ParamLoader` writing the unit's parameter memory."""

    def __init__(self, beats, lanes):
        self.beats, self.lanes = beats, lanes
        self.loader = ParamLoader(beats, lanes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.loader = self.loader
        m.submodules.params = self.params = memory.Memory(
            shape=channel_layout(self.lanes), depth=2 * self.beats, init=[])
        wiring.connect(m, self.loader.params, self.params.write_port())
        return m


@pytest.mark.parametrize("flow", [1.0, 0.4])
def test_param_loader_banks(flow):
    """Three images of 3 beats: banks 0 and 1 fill (one beat per cycle at full rate), the
    third waits for bank 0's release; gain, bias, shift and eps land in their bank."""
    beats, lanes = 3, 2
    rng = np.random.default_rng(11)
    images = [{"gain": rng.integers(-(1 << 15), 1 << 15, (beats, lanes)),
               "bias": rng.integers(-(1 << 31), 1 << 31, (beats, lanes)),
               "shift": int(rng.integers(0, 64)), "eps": int(rng.integers(0, 1 << 40))}
              for _ in range(3)]

    def words(image):
        return [Const.cast(param_layout(lanes).const({
            "gain": image["gain"][b].tolist(), "bias": image["bias"][b].tolist(),
            "shift": image["shift"], "eps": image["eps"]})).value for b in range(beats)]

    bench = _ParamBench(beats, lanes)
    loader = bench.loader
    log = {"done": []}

    async def testbench(ctx):
        log["first"] = await stream_put(ctx, loader.p, words(images[0]) + words(images[1]),
                                        FlowPattern(flow, seed=4))
        assert ctx.get(loader.full) == 0b11
        ctx.set(loader.p.payload.as_value(), words(images[2])[0])
        ctx.set(loader.p.valid, 1)
        for _ in range(3):                                   # both banks full: it waits
            assert not ctx.get(loader.p.ready)
            await ctx.tick()
        ctx.set(loader.release, 0b01)
        await ctx.tick()
        ctx.set(loader.release, 0)
        assert ctx.get(loader.full) == 0b10
        await stream_put(ctx, loader.p, words(images[2]), FlowPattern(flow, seed=5))
        await ctx.tick()
        assert ctx.get(loader.full) == 0b11
        log["memory"] = [ctx.get(bench.params.data[a]) for a in range(2 * beats)]
        log["shift"] = [ctx.get(loader.shift[b]) for b in range(2)]
        log["eps"] = [ctx.get(loader.eps[b]) for b in range(2)]

    async def monitor(ctx):
        async for _, _, done in ctx.tick().sample(loader.done):
            if done:
                log["done"].append(done)

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    if flow == 1.0:
        assert log["first"] == list(range(2 * beats))
    assert log["done"] == [0b01, 0b10, 0b01]
    for bank, image in ((0, images[2]), (1, images[1])):
        for b in range(beats):
            word = log["memory"][bank * beats + b]
            assert [word.gain[c] for c in range(lanes)] == image["gain"][b].tolist()
            assert [word.bias[c] for c in range(lanes)] == image["bias"][b].tolist()
        assert (log["shift"][bank], log["eps"][bank]) == (image["shift"], image["eps"])
