"""The MoE combine unit in Amaranth's simulator, against ``golden.moe.combine``."""

import numpy as np
import pytest
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.sim import Simulator

from golden.moe import combine, dispatch
from rtl.moe.combine import Combiner, exp_cycles
from sim.nonlinear_images import check_combine, combine_streams, routed_layer
from sim.flow import FlowPattern
from sim.pysim_stream import run_streams, stream_get, stream_put


def run_layers(layers, *, max_tokens, dim, po, i_flow=1.0, o_flow=1.0, seed=0):
    """Run several layers through one Combiner; check each flush against golden."""
    i_beats, flushes, out_count = combine_streams(layers, po, dim)
    res = run_streams(Combiner(max_tokens, dim, po), {"i": i_beats, "flush": flushes},
                      {"o": out_count}, name=f"combine_{dim}_{po}", seed=seed,
                      i_flow=i_flow, o_flow=o_flow)
    check_combine(res["o"][0], layers, po, dim)
    return res, len(i_beats)


@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.6, 0.5)])
def test_two_layers_back_to_back(i_flow, o_flow):
    rng = np.random.default_rng(1)
    dim, po = 40, 8
    layers = []
    for tokens, experts, k in ((33, 16, 2), (20, 8, 4)):
        routes, outputs, expected = routed_layer(rng, tokens, experts, k, dim)
        layers.append((routes, outputs, expected, tokens))
    run_layers(layers, max_tokens=33, dim=dim, po=po, i_flow=i_flow, o_flow=o_flow)


def test_corner_cases():
    rng = np.random.default_rng(2)
    dim, po, tokens = 16, 4, 12
    one = np.zeros((tokens, 4), int)
    one[:, 1] = 5000                                      # every token picks expert 1 (k = 1)
    same = routed_layer(rng, tokens, 4, 1, dim, u=one)
    # Saturation: scores that sum past 1.0 (255 + 255) with the largest outputs, both signs.
    idx = np.tile([2, 3], (tokens, 1))
    probs = np.zeros((tokens, 4), np.uint8)
    probs[:, 2:] = 255
    routes = dispatch(idx, probs, 4)
    sat, neg = ({e: np.full((tokens, dim), v) for e in (2, 3)} for v in (32767, -32768))
    sat = (routes, sat, combine(routes, sat, tokens, dim))
    neg = (routes, neg, combine(routes, neg, tokens, dim))
    # A layer in which no expert received a token: zeros at once.
    empty = (dispatch(np.zeros((0, 1), int), np.zeros((0, 4), np.uint8), 4), {},
             np.zeros((tokens, dim), np.int16), tokens)
    layers = [(*same, tokens), (*sat, tokens), empty, (*neg, tokens)]
    assert (layers[1][2] == 32767).all() and (layers[3][2] == -32768).all()
    run_layers(layers, max_tokens=tokens, dim=dim, po=po, o_flow=0.7)


def test_full_rate_cycles_match_model():
    rng = np.random.default_rng(3)
    dim, po, tokens = 48, 16, 17
    routes, outputs, expected = routed_layer(rng, tokens, 8, 2, dim)
    res, beats = run_layers([(routes, outputs, expected, tokens)], max_tokens=tokens, dim=dim, po=po)
    first_in, last_out = res["i"][0], res["o"][1][-1]
    assert last_out - first_in + 1 == exp_cycles(beats, tokens, 3)


def test_a_reset_mid_layer_leaves_no_partial_sums():
    # Half a layer's expert beats accumulate, then a reset (the top's reset mid-frame): the
    # next layer must come out as if the rows started at zero (the flush alone would have
    # cleared them, and no flush came). The rows are cleared after the reset, before i is taken.
    rng = np.random.default_rng(4)
    dim, po, tokens = 16, 4, 6
    half = (*routed_layer(rng, tokens, 4, 2, dim), tokens)
    layer = (*routed_layer(rng, tokens, 4, 2, dim), tokens)
    dirty, _, _ = combine_streams([half], po, dim)
    i_beats, flushes, out_count = combine_streams([layer], po, dim)
    dut = Combiner(tokens, dim, po)
    m, rst = Module(), Signal()
    m.submodules.dut = ResetInserter(rst)(dut)
    words = []

    async def bench(ctx):
        await stream_put(ctx, dut.i, dirty[:len(dirty) // 2], FlowPattern())
        await ctx.tick().repeat(3)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        taken = await stream_put(ctx, dut.i, i_beats, FlowPattern())
        assert taken[0] >= dut.clear_cycles
        await stream_put(ctx, dut.flush, flushes, FlowPattern())
        words.extend((await stream_get(ctx, dut.o, out_count, FlowPattern()))[0])

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    check_combine(words, [layer], po, dim)


@pytest.mark.parametrize("args, message", [
    ((0, 8, 4), r"max_tokens must be an integer in \[1, 4096\], not 0"),
    ((8, 0, 4), r"dim must be an integer in \[1, 4096\], not 0"),
    ((8, 8, 65), r"po must be an integer in \[1, 64\], not 65"),
])
def test_bad_parameters_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        Combiner(*args)
