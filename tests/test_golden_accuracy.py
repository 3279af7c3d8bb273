"""Where the routing loss comes from: golden.accuracy.routing_sources against the integer model."""

import numpy as np

from golden.accuracy import SOURCES, TracePool, routing_sources
from golden.config import tiny_test
from golden.float_model import forward, random_image
from golden.int_model import int_forward, pixels_from_image
from golden.metrics import routing_agreement
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.weights import init_weights

CFG = tiny_test()


def _model():
    weights = init_weights(CFG, seed=4)
    calib = -(-MIN_SAMPLES_PER_CHANNEL // CFG.num_tokens)
    images = [random_image(CFG, seed=s) for s in range(calib + 3)]
    return weights, calibrate(CFG, weights, images[:calib], "dual_stage"), images[calib:]


def test_fed_the_integer_models_own_gate_input_the_sources_reproduce_its_routing():
    # With the float LN2 output replaced by the integer model's (dequantized), the LN2
    # quantizer returns the integer codes: the integer gate path must pick the integer
    # model's experts, and the float gate on either input the same experts.
    weights, qp, images = _model()
    for task in range(CFG.num_tasks):
        for image in images:
            _, ref = forward(CFG, weights, image, task, trace=True)
            _, tr = int_forward(qp, pixels_from_image(CFG, image), task, trace=True)
            fed = dict(ref)
            for b in CFG.moe_blocks:
                p = f"blocks.{b}."
                fed[p + "norm2"] = qp[p + "norm2.scale"] * (tr[p + "norm2"] - qp[p + "norm2.zero_point"])
            for block, picks in routing_sources(qp, weights, fed, tr, task).items():
                assert set(picks) == set(SOURCES)
                assert np.array_equal(picks["gate_path"], tr[block + ".mlp.topk_idx"])
                assert np.array_equal(picks["gate_input"], picks["upstream"])


def test_pooled_sources_are_agreements_with_the_float_routing():
    weights, qp, images = _model()
    pool, picks = TracePool(), []
    for image in images:
        _, ref = forward(CFG, weights, image, 1, trace=True)
        _, tr = int_forward(qp, pixels_from_image(CFG, image), 1, trace=True)
        sources = routing_sources(qp, weights, ref, tr, 1)
        pool.add(ref, tr.dequantized(), sources)
        picks.append((ref, sources))
    got = pool.routing_sources()
    assert set(got) == {f"blocks.{b}" for b in CFG.moe_blocks}
    for block, by_source in got.items():
        for source, value in by_source.items():
            expected = routing_agreement(
                np.concatenate([ref[block + ".mlp.topk_idx"] for ref, _ in picks]),
                np.concatenate([s[block][source] for _, s in picks]))
            assert value == expected
