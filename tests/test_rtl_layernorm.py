"""The streaming LayerNorm unit against golden.layernorm.int_layernorm."""

import numpy as np
import pytest

from golden.layernorm import int_layernorm
from rtl.compute.layernorm import LayerNormUnit, exp_cycles, plan
from sim.nonlinear_images import check_layernorm, layernorm_batch, layernorm_streams
from sim.pysim_stream import run_streams


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
    # One token on an idle unit: its last output, B - 1 cycles after the first.
    assert exp_cycles(d, lanes, 1) == 2 * beats + p.sqrt_latency + p.recip_latency + 10


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
