"""Unit tests of the linear kernel in Amaranth's simulator, against the golden spec."""

import numpy as np
import pytest

from golden.gemm import int8_matmul
from rtl.linear import LinearConfig, LinearKernel, exp_cycles
from sim.linear_images import assemble_outputs, matrix_image, token_beats
from sim.pysim_stream import run_streams

N_TOKENS = 12


def run_jobs(config, shapes, *, seed=0, i_flow=1.0, o_flow=1.0):
    """Run ``(d_in, d_out, tokens)`` jobs; check every row; return the cycle count."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (N_TOKENS, max(s[0] for s in shapes)))
    w_beats, x_beats, y_count, expected = [], [], 0, []
    for n, (d_in, d_out, tokens) in enumerate(shapes):
        weight = rng.integers(-128, 128, (d_out, d_in))
        bias = rng.integers(-(1 << 24), 1 << 24, d_out)
        w_beats += matrix_image(config, f"job {n}", weight, bias)
        x_beats += token_beats(config, x[:, :d_in], tokens)
        y_count += len(tokens) * -(-d_out // config.po)
        expected.append(dict(zip(tokens, int8_matmul(x[tokens, :d_in], weight.T) + bias)))
    res = run_streams(LinearKernel(config), {"w": w_beats, "x": x_beats}, {"y": y_count},
                      name=f"linear_{config.pi}x{config.po}x{config.t}", seed=seed,
                      i_flow=i_flow, o_flow=o_flow)
    words, cycles = res["y"]
    outputs = assemble_outputs(config, words, [s[1] for s in shapes])
    for n, (out, exp) in enumerate(zip(outputs, expected)):
        assert sorted(out) == sorted(exp), f"job {n}"
        for token in exp:
            assert np.array_equal(out[token], exp[token]), f"job {n} token {token}"
    return cycles[-1] + 1


@pytest.mark.parametrize("pi, po, t, bus, packing", [
    (4, 4, 3, 64, False), (2, 3, 2, 32, True), (3, 2, 1, 32, False),
])
@pytest.mark.parametrize("i_flow, o_flow", [(1.0, 1.0), (0.5, 0.6), (1.0, 0.2)])
def test_job_sequence_bit_exact(pi, po, t, bus, packing, i_flow, o_flow):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=16, max_out=12, bus_width=bus,
                          dsp_packing=packing)
    shapes = [
        (16, 12, list(range(N_TOKENS))),        # largest matrix, every token
        (5, 7, [3]),                            # one token, dims not multiples of PI/PO
        (16, 1, [11, 0, 5, 7]),                 # gather in any order, T not dividing 4
        (1, 12, [2, 9]),
        (9, 12, list(range(0, N_TOKENS, 2))),
    ]
    run_jobs(config, shapes, seed=pi * 10 + po, i_flow=i_flow, o_flow=o_flow)


@pytest.mark.parametrize("pi, po, t, shapes", [
    (4, 4, 3, [(16, 8, 10)]),
    (4, 4, 3, [(8, 12, 1)]),
    (4, 4, 3, [(16, 12, 9), (16, 12, 9)]),
    (4, 4, 3, [(4, 12, 9)]),                    # KB < T: tile spacing bound
    (2, 4, 2, [(16, 12, 7), (6, 12, 5), (16, 4, 9)]),
    (4, 2, 4, [(16, 2, 12)]),                   # NB = 1: token-load bound
])
def test_full_rate_cycles_match_model(pi, po, t, shapes):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=16, max_out=12, bus_width=64)
    jobs = [(d_in, d_out, list(range(n))) for d_in, d_out, n in shapes]
    assert run_jobs(config, jobs) == exp_cycles(config, shapes)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pi=0), r"pi must be an integer in \[1, 64\], not 0"),
    (dict(po=65), r"po must be an integer in \[1, 64\], not 65"),
    (dict(t=17), r"t must be an integer in \[1, 16\], not 17"),
    (dict(t=1.5), r"t must be an integer in \[1, 16\], not 1.5"),
    (dict(max_in=0), r"max_in must be an integer in \[1, 65535\], not 0"),
    (dict(max_weight_words=17), r"max_weight_words must be an integer in \[1, 16\], not 17"),
    (dict(bus_width=16), r"bus_width must be an integer in \[32, 4096\], not 16"),
    (dict(dsp_packing=1), r"dsp_packing must be a bool, not 1"),
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


def test_kernel_takes_a_config():
    with pytest.raises(TypeError, match="config must be a LinearConfig"):
        LinearKernel(dict(pi=4))
