"""Dual-stage and min/max PTQ (golden.ptq) on the trained digits MoE-ViT and the small test config.

The accuracy claims of issue 4 are measured by ``make quant-report``; here: the
re-parameterisation is exact before re-quantization for every LayerNorm reader
(attention qkv, dense fc1, the gate, every expert, the head), the exported set runs
unchanged after a save / load, narrower widths give narrower codes, and bad inputs
are named.
"""

import numpy as np
import pytest

from golden.datasets import DATASETS, dataset
from golden.accuracy import evaluate, float_reference
from golden.config import tiny_test
from golden.float_model import layer_norm, random_image
from golden.int_model import QuantParams, int_classify, int_forward, pixels_from_image
from golden.ptq import (
    MIN_SAMPLES_PER_CHANNEL,
    calibrate,
    calibrate_dual_stage,
    collect_samples,
    float_layers,
    norm_readers,
    reparameterise,
)
from golden.softmax import ATTENTION_CODES, attention_from_scores
from golden.weights import init_weights


@pytest.fixture(scope="module")
def trained():
    digits = dataset("digits")
    cfg, weights = digits.config(), digits.load_weights()
    calib, _ = digits.load_split("calibration")
    return cfg, weights, calib


def _norm_inputs(cfg, samples):
    """The residual-stream rows each LayerNorm of norm_readers normalised."""
    inputs = {}
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        inputs[p + "norm1"] = samples["embed" if b == 0 else f"blocks.{b - 1}.out"]
        inputs[p + "norm2"] = samples[p + "x_attn"]
    if cfg.num_classes:
        n = cfg.num_tokens
        inputs["norm"] = samples[f"blocks.{cfg.depth - 1}.out"][::n]      # the class tokens
    return inputs


def test_reparameterisation_is_exact_for_every_reader(trained):
    cfg, weights, calib = trained
    samples = collect_samples(cfg, weights, calib[:64], 0, lambda it, d: it)
    lin, norms = float_layers(cfg, weights)
    lin_r, norms_r = float_layers(cfg, weights)
    targets = reparameterise(cfg, lin_r, norms_r, samples, 8)
    readers = norm_readers(cfg)
    # Every kind of reader is folded: qkv, dense fc1, the gate, all experts, the head.
    assert {"blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.mlp.gate.0", "head"} <= \
        {r for rs in readers.values() for r in rs}
    assert sum(name.endswith(".fc1") and "experts" in name for rs in readers.values() for name in rs) \
        == len(cfg.moe_blocks) * cfg.num_experts
    for norm, x in _norm_inputs(cfg, samples).items():
        y = layer_norm(x, *norms[norm], cfg.ln_eps)
        y_r = layer_norm(x, *norms_r[norm], cfg.ln_eps)
        scale, zp, scale_c, zp_c = targets[norm]
        assert -128 <= zp <= 127 and scale > 0 and np.isclose(scale_c.mean(), scale)
        assert zp_c.shape == scale_c.shape == (cfg.embed_dim,) and np.ptp(scale_c) > 0
        assert not np.allclose(y, y_r)          # the LayerNorm output did change ...
        for name in readers[norm]:
            ref = y @ lin[name][0].T + lin[name][1]
            out = y_r @ lin_r[name][0].T + lin_r[name][1]
            # ... but every reader computes the same function, up to float rounding.
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9 * max(1.0, np.abs(ref).max()),
                                       err_msg=name)


def test_exported_set_runs_unchanged_after_save_and_load(trained, tmp_path):
    cfg, weights, calib = trained
    qp = calibrate_dual_stage(cfg, weights, calib)
    assert qp.scalar("quant.act_bits") == 8 and qp.scalar("quant.weight_bits") == 8
    # The MoE gates gained the bias that the fold requires.
    assert np.abs(qp["blocks.1.mlp.gate.0.bias"]).max() > 0
    qp.save(tmp_path / "w8a8.npz")
    loaded = QuantParams.load(tmp_path / "w8a8.npz")
    images, labels = dataset("digits").load_split("test")
    images, labels = images[:40], labels[:40]
    ref = float_reference(cfg, weights, images, labels)
    a, b = evaluate(qp, images, ref), evaluate(loaded, images, ref)
    assert a == b
    for image in images[:5]:
        pixels = pixels_from_image(cfg, image)
        assert np.array_equal(int_classify(qp, pixels), int_classify(loaded, pixels))
    # On these images the integer model agrees with the float one almost everywhere,
    # and every MoE block routes like the float gate for most tokens.
    assert a["float_agreement"] >= 0.95
    assert min(a["routing"].values()) >= 0.8
    assert a["sqnr_db"]["logits"] > 15


@pytest.mark.parametrize("method", ["minmax", "dual_stage"])
@pytest.mark.parametrize("w_bits, a_bits", [(4, 8), (6, 6), (8, 4)])
def test_narrow_widths_give_narrow_codes(trained, method, w_bits, a_bits):
    cfg, weights, calib = trained
    qp = calibrate(cfg, weights, calib[:64], method, w_bits, a_bits)
    w_max = (1 << (w_bits - 1)) - 1
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.experts.fc1.weight", "head.weight"):
        assert np.abs(qp[name]).max() == w_max, name
    _, tr = int_classify(qp, pixels_from_image(cfg, calib[0]), trace=True)
    lo, hi = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    for name in ("blocks.0.norm1", "blocks.0.attn.q", "blocks.0.attn.out", "blocks.0.mlp.gelu",
                 "blocks.2.mlp.fc1", "norm"):
        assert lo <= tr[name].min() and tr[name].max() <= hi, name
    assert tr["blocks.0.norm1"].min() == lo or tr["blocks.0.norm1"].max() == hi


def test_minmax_on_a_backbone_matches_the_forward_format():
    cfg = tiny_test()
    weights = init_weights(cfg, seed=3)
    images = [random_image(cfg, seed=s) for s in range(3)]
    qp = calibrate(cfg, weights, images, "minmax")
    out = int_forward(qp, pixels_from_image(cfg, images[0]))
    assert out.shape == (cfg.num_tokens, cfg.embed_dim)
    with pytest.raises(ValueError, match=r"int_classify needs a config with num_classes > 0"):
        int_classify(qp, pixels_from_image(cfg, images[0]))


def test_bad_inputs_are_named(trained):
    cfg, weights, calib = trained
    with pytest.raises(ValueError, match=r"images must hold at least one calibration image"):
        calibrate(cfg, weights, [], "dual_stage")
    nan = calib[:100].copy()
    nan[7, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"images\[7\] holds NaN or inf"):
        calibrate(cfg, weights, nan, "dual_stage")
    with pytest.raises(ValueError, match=r"images\[0\] must have shape \(1, 8, 8\), got \(8, 8\)"):
        calibrate(cfg, weights, calib[:, 0], "minmax")
    for kw, name, value in ((dict(weight_bits=1), "weight_bits", 1), (dict(act_bits=9), "act_bits", 9),
                            (dict(weight_bits=16), "weight_bits", 16)):
        with pytest.raises(ValueError, match=rf"{name} must be an integer in \[2, 8\], got {value}"):
            calibrate(cfg, weights, calib[:64], "dual_stage", **kw)
    need = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)
    with pytest.raises(ValueError, match=rf"needs at least {MIN_SAMPLES_PER_CHANNEL} samples per "
                                         rf"channel, i.e. {need} images of 17 tokens; got {need - 1}"):
        calibrate(cfg, weights, calib[:need - 1], "dual_stage")
    calibrate(cfg, weights, calib[:need], "dual_stage")       # the boundary itself is accepted
    with pytest.raises(ValueError, match=r"method must be one of minmax, dual_stage, got 'kl'"):
        calibrate(cfg, weights, calib[:64], "kl")
    with pytest.raises(ValueError, match=r"attention must be one of log2, sqrt2, mant4, got 'log4'"):
        calibrate(cfg, weights, calib[:64], "minmax", attention="log4")


def test_each_attention_form_changes_only_the_codes(trained):
    cfg, weights, calib = trained
    forms = {name: calibrate(cfg, weights, calib[:64], "minmax", attention=name)
             for name in ATTENTION_CODES}
    pixels = pixels_from_image(cfg, calib[0])
    traces = {name: int_classify(qp, pixels, trace=True)[1] for name, qp in forms.items()}
    qp2, t2 = forms["log2"], traces["log2"]
    for index, (name, qp) in enumerate(forms.items()):
        assert qp.scalar("quant.attn_codes") == index and qp.attention_codes == name
        # Everything but the form's index is the same parameter set ...
        assert all(np.array_equal(qp2[n], qp[n]) for n in qp2.tensors if n != "quant.attn_codes")
        # ... the scores are equal, the codes are that form's codes of the same scores.
        tr = traces[name]
        assert np.array_equal(t2["blocks.0.attn.scores"], tr["blocks.0.attn.scores"])
        assert np.array_equal(tr["blocks.0.attn.codes"],
                              attention_from_scores(tr["blocks.0.attn.scores"],
                                                    np.zeros((cfg.num_tokens, 1), int), name)[0])
        if name != "log2":
            assert not np.array_equal(t2["blocks.0.attn.out"], tr["blocks.0.attn.out"])


@pytest.mark.parametrize("name, total", [("digits", 1797), ("mnist5k", 5000)])
def test_split_is_disjoint_and_seeded(name, total):
    data = dataset(name)
    train_x, train_y = data.load_split("train")
    test_x, test_y = data.load_split("test")
    calib_x, calib_y = data.load_split("calibration")
    assert len(test_x) == data.test_size and len(train_x) + len(test_x) == total
    assert len(calib_x) == data.calibration_size
    assert np.array_equal(calib_x, train_x[:data.calibration_size])
    assert np.array_equal(calib_y, train_y[:data.calibration_size])
    assert train_x.shape[1:] == test_x.shape[1:] == (1, *data.config().image_size)
    assert np.all(train_x * 256 == np.round(train_x * 256)) and 0 <= train_x.min() <= train_x.max() < 1
    assert set(np.unique(test_y)) == set(range(10))       # every class is in the test split
    flat = {im.tobytes() for im in train_x}
    # No test image also appears among the training images.
    assert not any(im.tobytes() in flat for im in test_x)
    with pytest.raises(ValueError, match=r"part must be 'train', 'calibration' or 'test', got 'val'"):
        data.load_split("val")


def test_every_dataset_has_its_trained_model():
    for data in DATASETS.values():
        weights = data.load_weights()       # validated against the config
        assert weights["head.weight"].shape == (10, data.config().embed_dim)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; valid: digits, mnist5k"):
        dataset("cifar")


def test_dual_stage_gives_v_one_scale_per_channel_folded_into_proj(trained):
    cfg, weights, calib = trained
    dual = calibrate_dual_stage(cfg, weights, calib)
    plain = calibrate(cfg, weights, calib, "minmax")
    res = dual.scalar("residual.scale")
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        s_v = dual[p + "attn.v.scale"]
        assert s_v.shape == (cfg.embed_dim,) and len(np.unique(s_v)) > cfg.embed_dim // 2
        assert len(np.unique(plain[p + "attn.v.scale"])) == 1
        # proj's integer weights times its requantizer read the attention output's codes at
        # v's per-channel scales: the effective real weight is the float one.
        step = dual[p + "attn.proj.mult"] * 2.0 ** -dual[p + "attn.proj.shift"].astype(float)
        w_eff = dual[p + "attn.proj.weight"] * step[:, None] * res / s_v[None, :]
        w = weights[p + "attn.proj.weight"]
        row_max = np.abs(w * s_v / s_v.max()).max(axis=1, keepdims=True)
        # Half a weight step of the folded row, mapped back through the column's factor.
        bound = 0.5 * row_max / 127 * s_v.max() / s_v[None, :] * 1.01
        assert np.all(np.abs(w_eff - w) <= bound)
