"""The integer forward and its parameter set, on the small test config (m3vit_tiny in bench/)."""

import json

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import forward, random_image
from golden.int_model import QuantParams, expected_shapes, int_forward, pixels_from_image
from golden.metrics import compare_traces, routing_agreement, sqnr_db
from golden.ptq import calibrate_minmax
from golden.weights import init_weights

CFG = tiny_test()


@pytest.fixture(scope="module")
def quantized():
    weights = init_weights(CFG, seed=1)
    images = [random_image(CFG, seed=s) for s in range(4)]
    return weights, calibrate_minmax(CFG, weights, images[:3]), images[3]


def test_parameter_set_is_complete_and_integer(quantized):
    _, qp, _ = quantized
    assert list(qp.tensors) == list(expected_shapes(CFG))
    for name, value in qp.tensors.items():
        if not name.endswith(("scale",)):
            assert np.issubdtype(value.dtype, np.integer), name
    assert qp["blocks.1.mlp.experts.fc1.weight"].shape == (CFG.num_experts, CFG.expert_hidden, CFG.embed_dim)
    assert qp["blocks.0.mlp.gelu.table"].shape == (256,)


def test_integer_frame_tracks_the_float_model(quantized):
    weights, qp, image = quantized
    ref, ref_trace = forward(CFG, weights, image, trace=True)
    out, trace = int_forward(qp, pixels_from_image(CFG, image), trace=True)
    assert out.dtype == np.int16 and out.shape == (CFG.num_tokens, CFG.embed_dim)
    assert all(np.issubdtype(v.dtype, np.integer) for v in trace.values())
    real = out * qp.scalar("residual.scale")
    assert sqnr_db(ref, real) > 20
    idx = "blocks.1.mlp.topk_idx"
    assert routing_agreement(ref_trace[idx], trace[idx]) >= 0.7
    rows = {row["name"]: row for row in compare_traces(ref_trace, trace.dequantized())}
    assert {"embed", "blocks.0.norm1", "blocks.0.attn.out", "blocks.1.mlp.gate_logits",
            "blocks.1.out"} <= set(rows)
    assert rows["embed"]["sqnr_db"] > 40


def test_save_load_round_trip(quantized, tmp_path):
    _, qp, image = quantized
    qp.save(tmp_path / "q.npz")
    loaded = QuantParams.load(tmp_path / "q.npz")
    assert loaded.config == CFG
    pixels = pixels_from_image(CFG, image)
    assert np.array_equal(int_forward(loaded, pixels, task=1), int_forward(qp, pixels, task=1))


def test_load_reads_format_2(quantized, tmp_path):
    # Format 2 stored the code form as the flag quant.attn_sqrt2 (0 log2, 1 sqrt2) and one
    # scale for v (min/max calibration has one anyway).
    _, qp, image = quantized
    tensors = {("quant.attn_sqrt2" if k == "quant.attn_codes" else k): v
               for k, v in qp.tensors.items()}
    for b in range(CFG.depth):
        tensors[f"blocks.{b}.attn.v.scale"] = np.array(qp[f"blocks.{b}.attn.v.scale"][0])
    meta = json.dumps({"format": 2, "config": CFG.to_dict()})
    # Format 2's forward read any non-zero flag as sqrt2.
    for flag, form in ((0, "log2"), (1, "sqrt2"), (2, "sqrt2")):
        tensors["quant.attn_sqrt2"] = np.array(flag, np.int32)
        np.savez(tmp_path / "v2.npz", __config__=np.array(meta), **tensors)
        loaded = QuantParams.load(tmp_path / "v2.npz")
        assert loaded.attention_codes == form and list(loaded.tensors) == list(qp.tensors)
    assert all(np.array_equal(loaded[n], qp[n]) for n in qp.tensors if n != "quant.attn_codes")
    pixels = pixels_from_image(CFG, image)
    sqrt2 = QuantParams(CFG, qp.tensors | {"quant.attn_codes": np.array(1, np.int32)})
    assert np.array_equal(int_forward(loaded, pixels), int_forward(sqrt2, pixels))


def test_an_unknown_attention_form_is_named(quantized):
    _, qp, _ = quantized
    with pytest.raises(ValueError, match=r"tensor 'quant.attn_codes' is 3, expected an index in "
                                         r"\[0, 2\] of log2, sqrt2, mant4"):
        QuantParams(CFG, qp.tensors | {"quant.attn_codes": np.array(3, np.int32)}).validate()


def test_load_names_a_missing_tensor(quantized, tmp_path):
    _, qp, _ = quantized
    partial = QuantParams(CFG, {k: v for k, v in qp.tensors.items() if k != "blocks.0.norm2.gain"})
    partial.save(tmp_path / "p.npz")
    with pytest.raises(ValueError, match=r"missing tensor 'blocks.0.norm2.gain'"):
        QuantParams.load(tmp_path / "p.npz")


def test_load_names_a_misshapen_tensor(quantized, tmp_path):
    _, qp, _ = quantized
    bad = dict(qp.tensors)
    bad["blocks.1.mlp.experts.fc1.weight"] = bad["blocks.1.mlp.experts.fc1.weight"][:, :-1]
    QuantParams(CFG, bad).save(tmp_path / "s.npz")
    with pytest.raises(ValueError, match=r"tensor 'blocks.1.mlp.experts.fc1.weight' has shape "
                                         r"\(4, 15, 32\), expected \(4, 16, 32\) for config 'tiny_test'"):
        QuantParams.load(tmp_path / "s.npz")


def test_bad_inputs_are_named(quantized):
    _, qp, image = quantized
    pixels = pixels_from_image(CFG, image)
    with pytest.raises(ValueError, match=r"pixels must have shape \(3, 32, 48\), got \(3, 32, 47\)"):
        int_forward(qp, pixels[:, :, :-1])
    with pytest.raises(ValueError, match=r"task must be in \[0, num_tasks-1=1\], got 2"):
        int_forward(qp, pixels, task=2)
    with pytest.raises(ValueError, match=r"image must have shape"):
        pixels_from_image(CFG, image[0])
    with pytest.raises(ValueError, match=r"images must hold at least one calibration image"):
        calibrate_minmax(CFG, quantized[0], [])
