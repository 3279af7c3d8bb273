import numpy as np
import pytest

from golden.config import m3vit_small, m3vit_tiny, tiny_test
from golden.weights import (WeightError, from_torch_state_dict, init_weights, load_npz,
                            param_shapes, save_npz, validate_weights)

CFG = tiny_test()


def test_m3vit_tiny_parameter_count():
    # 17,983,680 parameters per the reference model notes (both task gates included).
    assert sum(int(np.prod(s)) for s in param_shapes(m3vit_tiny()).values()) == 17_983_680
    shapes = param_shapes(m3vit_tiny())
    assert shapes["blocks.1.mlp.gate.1.w_gate"] == (192, 16)
    assert shapes["blocks.3.mlp.experts.htoh4.weight"] == (16, 384, 192)
    assert shapes["blocks.2.mlp.fc1.weight"] == (768, 192)
    assert "blocks.1.mlp.fc1.weight" not in shapes


@pytest.mark.parametrize("cfg", [tiny_test(), m3vit_small()])
def test_init_matches_shapes_and_is_seeded(cfg):
    w = init_weights(cfg, seed=3)
    assert {k: v.shape for k, v in w.items()} == param_shapes(cfg)
    assert all(v.dtype == np.float32 for v in w.values())
    if cfg.embed_dim < 100:
        again = init_weights(cfg, seed=3)
        assert all(np.array_equal(w[k], again[k]) for k in w)


def test_save_load_round_trip(tmp_path):
    w = init_weights(CFG)
    save_npz(tmp_path / "w.npz", w, CFG)
    loaded = load_npz(tmp_path / "w.npz", CFG)
    assert list(loaded) == list(param_shapes(CFG))
    assert all(np.array_equal(loaded[k], w[k]) for k in w)


def test_config_mismatch_is_named(tmp_path):
    save_npz(tmp_path / "w.npz", init_weights(CFG), CFG)
    other = tiny_test().__class__(**{**CFG.to_dict(), "top_k": 1})
    with pytest.raises(WeightError, match=r"saved for another config: top_k differ"):
        load_npz(tmp_path / "w.npz", other)


def _broken(change):
    w = init_weights(CFG)
    change(w)
    return w


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("blocks.1.mlp.gate.0.w_gate"), r"missing tensor 'blocks.1.mlp.gate.0.w_gate'"),
    (lambda w: w.update(extra=np.zeros(1, np.float32)), r"unexpected tensor 'extra'"),
    (lambda w: w.update({"pos_embed": np.zeros((1, 8, 32), np.float32)}),
     r"tensor 'pos_embed' has shape \(1, 8, 32\), expected \(1, 7, 32\)"),
    (lambda w: w["blocks.0.attn.qkv.bias"].__setitem__(3, np.nan),
     r"tensor 'blocks.0.attn.qkv.bias' holds NaN or inf"),
    (lambda w: w.update({"cls_token": np.zeros((1, 1, 32), np.int8)}),
     r"tensor 'cls_token' has dtype int8, expected a float type"),
])
def test_bad_weights_are_named(change, message):
    with pytest.raises(WeightError, match=message):
        validate_weights(_broken(change), CFG)


def test_torch_state_dict_import_with_prefix():
    class FakeTensor:               # duck-types torch.Tensor: no torch needed
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    w = init_weights(CFG)
    sd = {"backbone." + k: FakeTensor(v) for k, v in w.items()}
    sd["decoder.head.weight"] = FakeTensor(np.zeros(3))
    out = from_torch_state_dict(sd, CFG, prefix="backbone.")
    assert all(np.array_equal(out[k], w[k]) for k in w)
    with pytest.raises(WeightError, match=r"missing tensor 'patch_embed.proj.weight'"):
        from_torch_state_dict(sd, CFG)
