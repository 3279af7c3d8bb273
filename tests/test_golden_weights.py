import numpy as np
import pytest

from golden.config import ModelConfig, m3vit_small, m3vit_tiny, tiny_test
from golden.weights import (WeightError, from_torch_state_dict, init_weights, load_npz,
                            param_shapes, save_npz, validate_weights)

CFG = tiny_test()


def _count(shapes, *parts):
    return sum(int(np.prod(s)) for n, s in shapes.items() if any(p in n for p in parts))


def test_m3vit_tiny_parameter_count():
    shapes = param_shapes(m3vit_tiny())
    # The parameter table of the reference model notes, group by group.
    assert sum(int(np.prod(s)) for s in shapes.values()) == 17_983_680
    assert _count(shapes, "experts") == 14_155_776 + 55_296
    assert _count(shapes, "mlp.fc") == 1_769_472 + 5_760
    assert _count(shapes, "attn.") == 1_769_472 + 9_216
    assert _count(shapes, "w_gate") == 36_864
    assert _count(shapes, "norm") == 9_216
    assert _count(shapes, "patch_embed") == 147_648
    assert _count(shapes, "pos_embed", "cls_token") == 24_960
    assert len(shapes) == 160


def test_m3vit_tiny_names_shapes_and_order():
    shapes = param_shapes(m3vit_tiny())
    assert list(shapes)[:6] == ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token",
                                "pos_embed", "blocks.0.norm1.weight", "blocks.0.norm1.bias"]
    assert shapes["patch_embed.proj.weight"] == (192, 3, 16, 16)
    assert shapes["pos_embed"] == (1, 129, 192) and shapes["cls_token"] == (1, 1, 192)
    assert shapes["blocks.0.attn.qkv.weight"] == (576, 192)
    assert shapes["blocks.0.attn.qkv.bias"] == (576,)
    assert shapes["blocks.2.mlp.fc1.weight"] == (768, 192)
    assert shapes["blocks.2.mlp.fc2.weight"] == (192, 768)
    assert shapes["blocks.1.mlp.gate.1.w_gate"] == (192, 16)
    assert "blocks.1.mlp.gate.0.b_gate" not in shapes and "blocks.1.mlp.fc1.weight" not in shapes
    assert shapes["blocks.3.mlp.experts.htoh4.weight"] == (16, 384, 192)
    assert shapes["blocks.3.mlp.experts.htoh4.bias"] == (16, 384)
    assert shapes["blocks.3.mlp.experts.h4toh.weight"] == (16, 192, 384)
    assert shapes["blocks.3.mlp.experts.h4toh.bias"] == (16, 192)
    assert list(shapes)[-1] == "blocks.11.mlp.experts.h4toh.bias"
    assert sum(int(np.prod(s)) for s in param_shapes(m3vit_small()).values()) == 71_356_800


@pytest.mark.parametrize("cfg", [tiny_test(), m3vit_tiny(), m3vit_small()], ids=lambda c: c.name)
def test_init_matches_param_shapes(cfg):
    w = init_weights(cfg, seed=3)
    assert list(w) == list(param_shapes(cfg))
    assert {k: v.shape for k, v in w.items()} == param_shapes(cfg)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in w.values())


def test_init_is_seeded():
    a, b, c = init_weights(CFG, seed=3), init_weights(CFG, seed=3), init_weights(CFG, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["pos_embed"], c["pos_embed"])


def test_init_scales():
    cfg = m3vit_tiny()
    w = init_weights(cfg)
    d = cfg.embed_dim

    def std(name):
        return float(w[name].std())

    assert std("blocks.0.attn.qkv.weight") == pytest.approx(d ** -0.5, rel=0.02)
    assert std("blocks.0.attn.proj.weight") == pytest.approx(0.5 * d ** -0.5, rel=0.02)
    assert std("blocks.0.mlp.fc1.weight") == pytest.approx(d ** -0.5, rel=0.02)
    assert std("blocks.0.mlp.fc2.weight") == pytest.approx(0.5 * 768 ** -0.5, rel=0.02)
    assert std("blocks.1.mlp.experts.htoh4.weight") == pytest.approx(d ** -0.5, rel=0.02)
    assert std("blocks.1.mlp.experts.h4toh.weight") == pytest.approx(0.5 * 384 ** -0.5, rel=0.02)
    assert std("blocks.1.mlp.gate.0.w_gate") == pytest.approx(3 * d ** -0.5, rel=0.05)
    assert std("patch_embed.proj.weight") == pytest.approx(2 * 768 ** -0.5, rel=0.02)
    assert std("pos_embed") == pytest.approx(0.5, rel=0.05)
    assert std("blocks.0.attn.qkv.bias") == pytest.approx(0.02, rel=0.15)
    assert float(w["blocks.0.norm1.weight"].mean()) == pytest.approx(1.0, abs=0.03)
    assert std("blocks.0.norm1.weight") == pytest.approx(0.1, rel=0.2)
    assert std("blocks.0.norm2.bias") == pytest.approx(0.05, rel=0.2)


def test_save_load_round_trip(tmp_path):
    w = init_weights(CFG)
    save_npz(tmp_path / "w.npz", w, CFG)
    with np.load(tmp_path / "w.npz") as f:
        assert f["__config__"].shape == () and f["__config__"].dtype.kind == "U"
    loaded = load_npz(tmp_path / "w.npz", CFG)
    assert list(loaded) == list(param_shapes(CFG))
    assert all(loaded[k].dtype == np.float32 and np.array_equal(loaded[k], w[k]) for k in w)
    save_npz(tmp_path / "bare.npz", w)                     # no config stored: not checked
    assert all(np.array_equal(v, w[k]) for k, v in load_npz(tmp_path / "bare.npz", CFG).items())


def test_config_mismatch_is_named(tmp_path):
    save_npz(tmp_path / "w.npz", init_weights(CFG), CFG)
    other = ModelConfig.from_dict({**CFG.to_dict(), "top_k": 1})
    with pytest.raises(WeightError, match=r"saved for another config: "
                                          r"top_k is 2 in the file, 1 expected$"):
        load_npz(tmp_path / "w.npz", other)
    renamed = ModelConfig.from_dict({**CFG.to_dict(), "name": "x", "ln_eps": 1e-5})
    with pytest.raises(WeightError, match=r"name is 'tiny_test' in the file, 'x' expected; "
                                          r"ln_eps is 1e-06 in the file, 1e-05 expected"):
        load_npz(tmp_path / "w.npz", renamed)


def test_reserved_name_and_bad_stored_config(tmp_path):
    with pytest.raises(WeightError, match=r"tensor name '__config__' is reserved"):
        save_npz(tmp_path / "w.npz", {"__config__": np.zeros(1)})
    np.savez(tmp_path / "w.npz", __config__=np.array('{"heads": 3}'), **init_weights(CFG))
    with pytest.raises(WeightError, match=r"unreadable __config__: unknown ModelConfig field"):
        load_npz(tmp_path / "w.npz", CFG)


def _broken(change):
    w = init_weights(CFG)
    change(w)
    return w


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("blocks.1.mlp.gate.0.w_gate"),
     r"^missing tensor 'blocks.1.mlp.gate.0.w_gate'$"),
    (lambda w: w.update(extra=np.zeros(1, np.float32)), r"^unexpected tensor 'extra'$"),
    (lambda w: w.update({"pos_embed": np.zeros((1, 8, 32), np.float32)}),
     r"^tensor 'pos_embed' has shape \(1, 8, 32\), expected \(1, 7, 32\)$"),
    (lambda w: w.update({"blocks.1.mlp.experts.h4toh.weight": np.zeros((4, 16, 32), np.float32)}),
     r"tensor 'blocks.1.mlp.experts.h4toh.weight' has shape \(4, 16, 32\), expected \(4, 32, 16\)"),
    (lambda w: w["blocks.0.attn.qkv.bias"].__setitem__(3, np.nan),
     r"^tensor 'blocks.0.attn.qkv.bias' holds NaN or inf$"),
    (lambda w: w["blocks.1.norm2.weight"].__setitem__(0, -np.inf),
     r"^tensor 'blocks.1.norm2.weight' holds NaN or inf$"),
    (lambda w: w.update({"cls_token": np.zeros((1, 1, 32), np.int8)}),
     r"^tensor 'cls_token' has dtype int8, expected a float type$"),
])
def test_bad_weights_are_named(change, message):
    with pytest.raises(WeightError, match=message):
        validate_weights(_broken(change), CFG)
    assert issubclass(WeightError, ValueError)


def test_validate_returns_new_float32_arrays_in_order():
    w = {k: v.astype(np.float64) for k, v in reversed(init_weights(CFG).items())}
    out = validate_weights(w, CFG)
    assert list(out) == list(param_shapes(CFG))
    assert all(out[k].dtype == np.float32 and np.array_equal(out[k], w[k]) for k in out)
    out["cls_token"][...] = 7
    assert not (w["cls_token"] == 7).any()


class FakeTensor:
    """Duck-types the part of ``torch.Tensor`` the importer uses; torch is not needed."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def test_torch_state_dict_import_with_prefix():
    w = init_weights(CFG)
    sd = {"backbone." + k: FakeTensor(v) for k, v in w.items()}
    sd["decoder.head.weight"] = FakeTensor(np.zeros(3))
    sd["backbone.head.weight"] = FakeTensor(np.zeros(3))
    out = from_torch_state_dict(sd, CFG, prefix="backbone.")
    assert list(out) == list(param_shapes(CFG))
    assert all(np.array_equal(out[k], w[k]) for k in w)
    with pytest.raises(WeightError, match=r"^missing tensor 'patch_embed.proj.weight'$"):
        from_torch_state_dict(sd, CFG)
    del sd["backbone.blocks.1.mlp.gate.1.w_gate"]
    with pytest.raises(WeightError,
                       match=r"^missing tensor 'backbone.blocks.1.mlp.gate.1.w_gate'$"):
        from_torch_state_dict(sd, CFG, prefix="backbone.")


def test_numpy_state_dict_import_is_validated():
    sd = {"module." + k: v.astype(np.float64).tolist() for k, v in init_weights(CFG).items()}
    out = from_torch_state_dict(sd, CFG, prefix="module.")
    assert out["pos_embed"].dtype == np.float32
    sd["module.cls_token"] = np.zeros((1, 32))
    with pytest.raises(WeightError, match=r"tensor 'cls_token' has shape \(1, 32\), expected"):
        from_torch_state_dict(sd, CFG, prefix="module.")
