"""The routing ablation's fake quantization (bench/routing_ablation.py) on the small test config."""

import numpy as np

from bench.routing_ablation import GROUPS, FakeQuant, _point, _pooled, integer_rows
from golden.config import tiny_test
from golden.float_model import forward, random_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL
from golden.weights import init_weights

CFG = tiny_test()


def _setup():
    weights = init_weights(CFG, seed=5)
    calib = -(-MIN_SAMPLES_PER_CHANNEL // CFG.num_tokens)
    images = [random_image(CFG, seed=s) for s in range(calib + 2)]
    return weights, images[:calib], images[calib:]


def test_points_drop_block_and_expert_numbers():
    assert _point("blocks.3.mlp.experts.2.fc1") == "mlp.experts.fc1"
    assert _point("blocks.10.attn.out") == "attn.out" and _point("blocks.1.out") == "out"
    assert all(p in sum(GROUPS.values(), ()) for p in ("embed", "norm", "mlp.gate_logits"))


def test_fake_quantization_puts_each_point_on_its_grid():
    weights, calib, images = _setup()
    fq = FakeQuant(CFG, weights, calib, forward)
    out, ref = forward(CFG, weights, images[0], 1, trace=True)
    fq.groups = ()
    assert np.array_equal(forward(CFG, weights, images[0], 1, hook=fq), out)
    for bits in (8, 10):
        fq.groups, fq.bits = tuple(GROUPS), bits
        _, tr = forward(CFG, weights, images[0], 1, trace=True, hook=fq)
        h = tr["blocks.1.norm2"]                    # per channel: at most 2**bits levels each
        assert max(len(np.unique(h[:, c])) for c in range(h.shape[1])) <= 1 << bits
        q = tr["blocks.0.attn.q"]                   # per tensor, symmetric: a multiple of one step
        step = np.abs(q[q != 0]).min()
        assert np.allclose(q / step, np.round(q / step)) and len(np.unique(q)) <= 1 << bits
        x = tr["blocks.0.out"]                      # the residual stream on a 16-bit grid
        assert np.allclose(x / fq.residual * 32767, np.round(x / fq.residual * 32767))
        assert not np.array_equal(tr["blocks.1.mlp.gate_logits"], ref["blocks.1.mlp.gate_logits"])
    # An expert the calibration never routed to takes the range of all its block's experts.
    unseen = "blocks.1.mlp.experts.99.fc1"
    assert _pooled(unseen) == "blocks.1.mlp.experts.fc1" and unseen not in fq.ranges
    lo, hi = fq.ranges[_pooled(unseen)]
    step = (hi - lo) / ((1 << fq.bits) - 1)         # clamped to that range's ends
    assert np.allclose(fq(unseen, np.array([lo - 1.0, hi + 1.0])), [lo, hi], atol=step)


def test_integer_rows_cover_each_attention_form_and_the_gate_variants():
    weights, calib, images = _setup()
    rows = integer_rows(CFG, weights, calib, images, forward)
    labels = [r[0].strip(" .") for r in rows]
    assert labels == ["dual_stage/log2", "dual_stage/sqrt2", "dual_stage/mant4",
                      "gate logits with 4 more fraction bits", "float gate on a 16-bit LN2 output"]
    for label, routing, sources in rows:
        assert set(routing) == {"blocks.1"} and 0 <= routing["blocks.1"] <= 1
        assert (sources is None) == label.startswith("  ")
