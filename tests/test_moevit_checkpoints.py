"""Weight import: Edge-MoE folders, PyTorch / safetensors checkpoints, .npz; malformed inputs."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import forward, random_image
from golden.weights import init_weights, param_shapes, save_npz
from moevit import checkpoints
from moevit.checkpoints import (CheckpointError, detect_format, read_edge_moe, read_torch,
                                read_weights, write_edge_moe, write_safetensors)

CFG = tiny_test()


@pytest.fixture(scope="module")
def weights():
    w = init_weights(CFG, seed=3)
    w["cls_token"] = np.full_like(w["cls_token"], 0.25)      # a class token to fold
    return w


@pytest.fixture
def edge(tmp_path, weights):
    write_edge_moe(tmp_path / "weights", weights, CFG)
    return tmp_path / "weights"


def test_edge_moe_folder_round_trip_folds_the_class_token(edge, weights):
    back = read_edge_moe(edge, CFG)
    assert detect_format(edge) == "edge-moe"
    assert not back["cls_token"].any()
    assert np.array_equal(back["pos_embed"][0, 0], weights["pos_embed"][0, 0] + 0.25)
    assert np.array_equal(back["pos_embed"][0, 1:], weights["pos_embed"][0, 1:])
    for name in param_shapes(CFG):
        if name not in ("cls_token", "pos_embed"):
            assert np.array_equal(back[name], weights[name]), name
    # The same model: folding the class token changes nothing downstream.
    image = random_image(CFG, seed=1)
    assert np.allclose(forward(CFG, back, image), forward(CFG, weights, image), atol=1e-5)
    # Read, write, read: the files are byte-identical.
    again = edge.parent / "again"
    write_edge_moe(again, back, CFG)
    for path in edge.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_edge_moe_layout_is_little_endian_float32_with_transposed_gates(edge, weights):
    gate = np.fromfile(edge / "l1_w_gate_T_task1.float32.bin", "<f4")
    assert np.array_equal(gate.reshape(CFG.num_experts, CFG.embed_dim),
                          weights["blocks.1.mlp.gate.1.w_gate"].T)
    qkv = np.fromfile(edge / "l0_qkv_weight.float32.bin", "<f4")
    assert np.array_equal(qkv.reshape(3 * CFG.embed_dim, CFG.embed_dim),
                          weights["blocks.0.attn.qkv.weight"])
    assert (edge / "l0_fc1_bias.float32.bin").is_file()
    assert not (edge / "l1_fc1_bias.float32.bin").exists()          # block 1 is MoE


def test_edge_moe_skips_the_reference_files_of_the_real_folder(edge):
    (edge / "image.float32.bin").write_bytes(b"\0" * 12)
    (edge / "l1_x_post_moe.float32.bin").write_bytes(b"\0" * 8)
    (edge / "scripts").mkdir()
    read_edge_moe(edge, CFG)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "l0_qkv_bias.float32.bin").unlink(),
     r"l0_qkv_bias.float32.bin: missing tensor file \(tensor 'blocks.0.attn.qkv.bias'\)"),
    (lambda f: (f / "l0_norm1_weight.float32.bin").write_bytes(b"\0" * 12),
     r"l0_norm1_weight.float32.bin: 12 bytes, expected 128 \(32 float32 of shape \(32,\)\)"),
    (lambda f: (f / "patch_embed_bias.float32.bin").write_bytes(
        np.full(CFG.embed_dim, np.nan, "<f4").tobytes()),
     r"patch_embed_bias.float32.bin: holds NaN or inf"),
    (lambda f: (f / "l7_qkv_weight.float32.bin").write_bytes(b"\0" * 4),
     r"l7_qkv_weight.float32.bin: unexpected tensor file for model 'tiny_test'"),
])
def test_edge_moe_errors_name_the_file(edge, damage, message):
    damage(edge)
    with pytest.raises(CheckpointError, match=message):
        read_edge_moe(edge, CFG)


def test_edge_moe_has_no_classifier(tmp_path, weights):
    from dataclasses import replace
    with pytest.raises(CheckpointError, match="num_classes=10 \\(expected 0\\)"):
        read_edge_moe(tmp_path, replace(CFG, num_classes=10))


def test_safetensors_round_trip_with_the_m3vit_prefix_found(tmp_path, weights):
    path = tmp_path / "ckpt.safetensors"
    write_safetensors(path, weights, CFG, prefix="module.backbone.")
    assert detect_format(path) == "safetensors"
    back = read_weights(path, CFG)
    assert back.keys() == weights.keys()
    for name in weights:
        assert np.array_equal(back[name], weights[name]), name


def _safetensors(path, tensors):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(path))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("backbone.blocks.0.norm1.bias"),
     r"missing tensor 'backbone.blocks.0.norm1.bias'"),
    (lambda t: t.update({"backbone.blocks.1.mlp.gate.0.w_noise": np.zeros((32, 4))}),
     r"unexpected tensor 'backbone.blocks.1.mlp.gate.0.w_noise' for model 'tiny_test'"),
    (lambda t: t.update({"backbone.blocks.0.attn.proj.bias": np.zeros(31)}),
     r"tensor 'blocks.0.attn.proj.bias' has shape \(31,\), expected \(32,\)"),
    (lambda t: t.update({"backbone.cls_token": np.full((1, 1, 32), np.inf)}),
     r"tensor 'cls_token' holds NaN or inf"),
    (lambda t: t.update({"other.patch_embed.proj.weight": np.zeros(1)}),
     r"several backbones \('backbone.', 'other.'\); choose one with --prefix"),
])
def test_checkpoint_errors_name_the_tensor(tmp_path, weights, change, message):
    tensors = {"backbone." + k: v for k, v in weights.items()}
    tensors["decoders.semseg.weight"] = np.zeros(3)              # other keys are ignored
    change(tensors)
    path = tmp_path / "bad.safetensors"
    _safetensors(path, tensors)
    with pytest.raises(CheckpointError, match=message):
        read_weights(path, CFG)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="x.safetensors: not a readable .safetensors file"):
        read_weights(path, CFG)


def test_torch_files_need_torch_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)          # import torch fails
    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"\0")
    with pytest.raises(CheckpointError, match=r"needs torch \(pip install torch\)"):
        read_weights(path, CFG)


def test_expert_parallel_rank_folder_concatenates_the_experts(tmp_path, weights, monkeypatch):
    """M3ViT's ``checkpoint.pth.tar/`` of ``<rank>.pth``: rank 0 has everything with its share
    of the experts, rank 1 only its experts (read here through safetensors instead of torch)."""
    from safetensors.numpy import load_file
    monkeypatch.setattr(checkpoints, "_torch_state", lambda p: dict(load_file(str(p))))
    folder = tmp_path / "checkpoint.pth.tar"
    folder.mkdir()
    half = CFG.num_experts // 2
    rank0 = {"module.backbone." + k: (v[:half] if ".experts." in k else v)
             for k, v in weights.items()}
    rank1 = {"module.backbone." + k: v[half:] for k, v in weights.items() if ".experts." in k}
    _safetensors(folder / "0.pth", rank0)
    _safetensors(folder / "1.pth", rank1)
    assert detect_format(folder) == "torch"
    back = read_torch(folder, CFG)
    for name in weights:
        assert np.array_equal(back[name], weights[name]), name
    (folder / "1.pth").rename(folder / "2.pth")
    with pytest.raises(CheckpointError, match="rank files 0.pth, 1.pth, ... with no gaps"):
        read_torch(folder, CFG)


def test_npz_with_a_pickled_object_is_refused(tmp_path, weights):
    path = tmp_path / "evil.npz"
    np.savez(path, **weights, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz: member 'payload' holds a pickled object array"):
        read_weights(path, CFG)


def test_npz_saved_for_another_model(tmp_path, weights):
    from dataclasses import replace
    path = tmp_path / "w.npz"
    save_npz(path, weights, replace(CFG, name="other"))
    with pytest.raises(CheckpointError, match="saved for another config: name is 'other'"):
        read_weights(path, CFG)


def test_unknown_source():
    with pytest.raises(CheckpointError, match="nowhere.bin: no such file or folder"):
        read_weights("nowhere.bin", CFG)


def test_no_allow_pickle_true_in_the_repository():
    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"allow_pickle\s*=\s*" + "True")
    sources = [p for folder in ("golden", "rtl", "sim", "moevit", "platforms", "bench",
                                "examples", "tests") for p in (root / folder).rglob("*.py")]
    assert len(sources) > 50
    hits = [f"{p}:{n}" for p in sources
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_an_npy_given_for_an_npz_is_named(tmp_path):
    path = tmp_path / "w.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(CheckpointError, match="w.npz: a .npy array, expected an .npz archive"):
        read_weights(path, CFG)
