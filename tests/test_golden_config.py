import pytest

from golden.config import PRESETS, ModelConfig, m3vit_small, m3vit_tiny, preset, tiny_test


def test_m3vit_tiny_matches_the_reference_model():
    cfg = m3vit_tiny()
    assert cfg.grid == (8, 16) and cfg.num_patches == 128 and cfg.num_tokens == 129
    assert (cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.depth) == (192, 3, 64, 12)
    assert cfg.mlp_hidden == 768 and cfg.expert_hidden == 384 and cfg.patch_dim == 768
    assert cfg.moe_blocks == (1, 3, 5, 7, 9, 11) and [cfg.is_moe(b) for b in range(3)] == [False, True, False]
    assert (cfg.num_experts, cfg.top_k, cfg.num_tasks, cfg.ln_eps) == (16, 2, 2, 1e-6)


def test_other_presets():
    small = m3vit_small()
    assert (small.embed_dim, small.num_heads, small.head_dim, small.mlp_hidden) == (384, 6, 64, 1536)
    test = tiny_test()
    assert test.num_tokens == 7 and test.moe_blocks == (1,)
    assert set(PRESETS) == {"m3vit_tiny", "m3vit_small", "tiny_test"}
    assert preset("tiny_test") == test


@pytest.mark.parametrize("cfg", [m3vit_tiny(), m3vit_small(), tiny_test()])
def test_json_round_trip(cfg):
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=5), r"num_heads must divide embed_dim \(192\), got 5"),
    (dict(top_k=17), r"top_k must be in \[1, min\(num_experts=16, 4\)\], got 17"),
    (dict(top_k=0), r"top_k must be in \[1, min\(num_experts=16, 4\)\], got 0"),
    (dict(image_size=(130, 256)), r"image_size \(130, 256\) must be a multiple of patch_size 16"),
    (dict(moe_blocks=(1, 12)), r"moe_blocks entries must be in \[0, depth-1=11\], got 12"),
    (dict(embed_dim=0), r"embed_dim must be an integer in \[1, 4096\], got 0"),
    (dict(num_experts=65), r"num_experts must be an integer in \[1, 64\], got 65"),
    (dict(ln_eps=0.0), r"ln_eps must be in \(0, 1\), got 0.0"),
    (dict(depth=True), r"depth must be an integer in \[1, 64\], got True"),
])
def test_invalid_configs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown preset 'vit_huge'; valid: m3vit_tiny"):
        preset("vit_huge")
    with pytest.raises(ValueError, match=r"unknown ModelConfig field 'heads'"):
        ModelConfig.from_dict({"heads": 3})
