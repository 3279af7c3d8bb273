import dataclasses

import pytest

from golden.config import PRESETS, ModelConfig, m3vit_small, m3vit_tiny, preset, tiny_test


def test_m3vit_tiny_matches_the_reference_model():
    cfg = m3vit_tiny()
    assert cfg == ModelConfig() and cfg.name == "m3vit_tiny"
    assert cfg.image_size == (128, 256) and cfg.in_chans == 3 and cfg.patch_size == 16
    assert cfg.grid == (8, 16) and cfg.num_patches == 128 and cfg.num_tokens == 129
    assert (cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.depth) == (192, 3, 64, 12)
    assert cfg.mlp_hidden == 768 and cfg.expert_hidden == 384 and cfg.patch_dim == 768
    assert cfg.moe_blocks == (1, 3, 5, 7, 9, 11)
    assert [cfg.is_moe(b) for b in range(12)] == [b % 2 == 1 for b in range(12)]
    assert (cfg.num_experts, cfg.top_k, cfg.num_tasks, cfg.ln_eps) == (16, 2, 2, 1e-6)


def test_m3vit_small():
    small = m3vit_small()
    assert (small.embed_dim, small.num_heads, small.head_dim) == (384, 6, 64)
    assert small.mlp_hidden == 1536
    assert small.expert_hidden == 768 and small.num_tokens == 129
    assert dataclasses.replace(small, name="m3vit_tiny", embed_dim=192, num_heads=3,
                               expert_hidden=384) == m3vit_tiny()


def test_tiny_test():
    cfg = tiny_test()
    assert cfg.grid == (2, 3) and cfg.num_patches == 6 and cfg.num_tokens == 7
    assert (cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.depth) == (32, 2, 16, 2)
    assert cfg.mlp_hidden == 64 and cfg.moe_blocks == (1,) and not cfg.is_moe(0)
    assert (cfg.num_experts, cfg.top_k, cfg.expert_hidden, cfg.num_tasks) == (4, 2, 16, 2)


def test_presets_by_name():
    assert list(PRESETS) == ["m3vit_tiny", "m3vit_small", "tiny_test"]
    for name, make in PRESETS.items():
        assert preset(name) == make() and preset(name).name == name
    with pytest.raises(ValueError, match=r"unknown preset 'vit_huge'; "
                                         r"valid: m3vit_tiny, m3vit_small, tiny_test"):
        preset("vit_huge")


@pytest.mark.parametrize("cfg", [m3vit_tiny(), m3vit_small(), tiny_test()], ids=lambda c: c.name)
def test_json_round_trip(cfg):
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["moe_blocks"], list)


def test_sequences_become_sorted_tuples_and_the_config_is_frozen():
    cfg = ModelConfig(image_size=[128, 256], moe_blocks=[11, 9, 7, 5, 3, 1])
    assert cfg == m3vit_tiny() and isinstance(cfg.image_size, tuple)
    assert hash(cfg) == hash(m3vit_tiny())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.depth = 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_heads=5), r"num_heads must divide embed_dim \(192\), got 5"),
    (dict(num_heads=0), r"num_heads must be an integer in \[1, 192\], got 0"),
    (dict(top_k=17), r"top_k must be in \[1, min\(num_experts=16, 4\)\], got 17"),
    (dict(top_k=5), r"top_k must be in \[1, min\(num_experts=16, 4\)\], got 5"),
    (dict(top_k=0), r"top_k must be in \[1, min\(num_experts=16, 4\)\], got 0"),
    (dict(num_experts=2, top_k=3), r"top_k must be in \[1, min\(num_experts=2, 4\)\], got 3"),
    (dict(image_size=(130, 256)), r"image_size \(130, 256\) must be a multiple of patch_size 16"),
    (dict(image_size=(128,)), r"image_size must be \(H, W\), got \(128,\)"),
    (dict(image_size=128), r"image_size must be \(H, W\), got 128"),
    (dict(image_size=(0, 256)), r"image_size\[0\] must be an integer in \[1, 8192\], got 0"),
    (dict(image_size=(128, 256.0)),
     r"image_size\[1\] must be an integer in \[1, 8192\], got 256.0"),
    (dict(moe_blocks=(1, 12)), r"moe_blocks entries must be in \[0, depth-1=11\], got 12"),
    (dict(moe_blocks=(-1,)), r"moe_blocks entries must be in \[0, depth-1=11\], got -1"),
    (dict(moe_blocks=(1, "3")), r"moe_blocks entries must be in \[0, depth-1=11\], got '3'"),
    (dict(moe_blocks=(3, 1, 3)), r"moe_blocks entries must be distinct, got \(3, 1, 3\)"),
    (dict(moe_blocks=3), r"moe_blocks must be a sequence of block indices, got 3"),
    (dict(name=""), r"name must be a non-empty string, got ''"),
    (dict(in_chans=0), r"in_chans must be an integer in \[1, 64\], got 0"),
    (dict(patch_size=0), r"patch_size must be an integer in \[1, 256\], got 0"),
    (dict(embed_dim=0), r"embed_dim must be an integer in \[1, 4096\], got 0"),
    (dict(depth=True), r"depth must be an integer in \[1, 64\], got True"),
    (dict(mlp_ratio=17), r"mlp_ratio must be an integer in \[1, 16\], got 17"),
    (dict(num_experts=65), r"num_experts must be an integer in \[1, 64\], got 65"),
    (dict(expert_hidden=0), r"expert_hidden must be an integer in \[1, 16384\], got 0"),
    (dict(num_tasks=0), r"num_tasks must be an integer in \[1, 16\], got 0"),
    (dict(ln_eps=0.0), r"ln_eps must be in \(0, 1\), got 0.0"),
    (dict(ln_eps=True), r"ln_eps must be in \(0, 1\), got True"),
])
def test_invalid_configs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown ModelConfig field 'heads'"):
        ModelConfig.from_dict({"heads": 3})
    with pytest.raises(ValueError, match=r"unknown ModelConfig field 'drop_path'"):
        ModelConfig.from_json('{"depth": 4, "drop_path": 0.1}')
    assert ModelConfig.from_json('{"depth": 4, "moe_blocks": [1, 3]}').depth == 4
