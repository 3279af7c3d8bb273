"""The float model against loop-based definitions written independently here."""

import math

import numpy as np
import pytest

from golden.config import m3vit_tiny, tiny_test
from golden.float_model import (attention, forward, gelu, layer_norm, mlp, moe, patch_embed,
                                patchify, random_image, softmax, topk)
from golden.weights import WeightError, init_weights

CFG = tiny_test()


def _gelu(v):
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def _linear(x, w, b):
    """Row vector ``x`` through torch-style ``w`` [out, in] and ``b``, one output at a time."""
    return [sum(x[c] * float(w[o, c]) for c in range(w.shape[1])) + float(b[o])
            for o in range(w.shape[0])]


def test_gelu_is_exact_erf_gelu():
    x = np.concatenate([np.linspace(-8, 8, 2001), [-40.0, -1e-300, 0.0, 1e-8, 40.0]])
    got = gelu(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    assert np.abs(got - [_gelu(v) for v in x]).max() < 1e-15
    assert gelu(1.5) == pytest.approx(_gelu(1.5), abs=1e-16) and gelu(np.float32(2)).shape == ()
    assert gelu(np.zeros((2, 0))).shape == (2, 0)


def test_layer_norm_and_softmax_against_loops():
    rng = np.random.default_rng(0)
    x, g, b = rng.normal(3, 2, (5, 12)), rng.normal(1, 0.1, 12), rng.normal(0, 0.1, 12)
    for row, got in zip(x, layer_norm(x, g, b, 1e-6), strict=True):
        mean = sum(row) / 12
        var = sum((v - mean) ** 2 for v in row) / 12          # biased, as torch
        assert np.allclose(got, [(v - mean) / math.sqrt(var + 1e-6) * g[i] + b[i]
                                 for i, v in enumerate(row)], rtol=1e-12, atol=1e-12)
    s = np.array([[1000.0, 1000.0, 999.0], [-1e4, 0.0, 1.0]])   # no overflow
    for row, got in zip(s, softmax(s), strict=True):
        e = [math.exp(v - max(row)) for v in row]
        assert np.allclose(got, [v / sum(e) for v in e], rtol=1e-12, atol=0)
    assert np.allclose(softmax(s, axis=0).sum(axis=0), 1)


def test_patchify_and_embedding():
    w = init_weights(CFG)
    image = random_image(CFG, seed=5)
    patches = patchify(CFG, image)
    assert patches.shape == (6, 768) and patches.dtype == image.dtype
    # Patch (row 1, col 2) is patch 1 * 3 + 2 = 5, features (c, ky, kx).
    assert patches[5, 1 * 256 + 3 * 16 + 4] == image[1, 16 + 3, 32 + 4]
    emb = patch_embed(CFG, w, image)
    assert emb.shape == (7, 32) and emb.dtype == np.float64
    assert np.allclose(emb[0], w["cls_token"][0, 0] + w["pos_embed"][0, 0], atol=1e-6)
    for i, (gy, gx) in enumerate((gy, gx) for gy in range(2) for gx in range(3)):
        window = image[:, 16 * gy:16 * gy + 16, 16 * gx:16 * gx + 16]
        direct = (w["patch_embed.proj.weight"] * window).sum(axis=(1, 2, 3))
        direct += w["patch_embed.proj.bias"] + w["pos_embed"][0, 1 + i]
        assert np.allclose(emb[1 + i], direct, atol=1e-5)


def test_attention_against_loops():
    rng = np.random.default_rng(0)
    n, d, heads, hd = CFG.num_tokens, CFG.embed_dim, CFG.num_heads, CFG.head_dim
    h = rng.normal(size=(n, d))
    w_qkv, b_qkv = rng.normal(size=(3 * d, d)) / 5, rng.normal(size=3 * d)
    w_p, b_p = rng.normal(size=(d, d)) / 5, rng.normal(size=d)
    qkv = [_linear(h[i], w_qkv, b_qkv) for i in range(n)]
    probs = np.zeros((heads, n, n))
    out = [[0.0] * d for _ in range(n)]
    for j in range(heads):
        for i in range(n):
            s = [sum(qkv[i][j * hd + c] * qkv[m][d + j * hd + c] for c in range(hd)) / math.sqrt(hd)
                 for m in range(n)]
            top = max(s)
            e = [math.exp(v - top) for v in s]
            probs[j, i] = [v / sum(e) for v in e]
            for c in range(hd):
                v = [qkv[m][2 * d + j * hd + c] for m in range(n)]
                out[i][j * hd + c] = sum(e[m] * v[m] for m in range(n)) / sum(e)
    ref = [_linear(out[i], w_p, b_p) for i in range(n)]
    trace = {}
    got = attention(CFG, h, w_qkv, b_qkv, w_p, b_p, trace, "blocks.0.")
    assert got.shape == (n, d) and np.allclose(got, ref, rtol=1e-9, atol=1e-9)
    assert np.allclose(trace["blocks.0.attn.probs"], probs, rtol=1e-9, atol=1e-12)
    assert np.allclose(trace["blocks.0.attn.out"], out, rtol=1e-9, atol=1e-9)
    assert np.allclose(trace["blocks.0.attn.k"][1, 4], [qkv[4][d + hd + c] for c in range(hd)])
    assert {k: v.shape for k, v in trace.items()} == {
        "blocks.0.attn.q": (2, 7, 16), "blocks.0.attn.k": (2, 7, 16), "blocks.0.attn.v": (2, 7, 16),
        "blocks.0.attn.scores": (2, 7, 7), "blocks.0.attn.probs": (2, 7, 7),
        "blocks.0.attn.out": (7, 32), "blocks.0.attn.proj": (7, 32)}


def test_dense_mlp_against_loops():
    w = init_weights(CFG, seed=6)
    h = np.random.default_rng(2).normal(size=(CFG.num_tokens, CFG.embed_dim))
    p = "blocks.0.mlp."
    got = mlp(h, w[p + "fc1.weight"], w[p + "fc1.bias"], w[p + "fc2.weight"], w[p + "fc2.bias"])
    for i in range(CFG.num_tokens):
        g = [_gelu(v) for v in _linear(h[i], w[p + "fc1.weight"], w[p + "fc1.bias"])]
        assert np.allclose(got[i], _linear(g, w[p + "fc2.weight"], w[p + "fc2.bias"]),
                           rtol=1e-9, atol=1e-9)


def _expert(w, p, e, x):
    g = [_gelu(v) for v in _linear(x, w[p + "experts.htoh4.weight"][e],
                                   w[p + "experts.htoh4.bias"][e])]
    return np.array(_linear(g, w[p + "experts.h4toh.weight"][e], w[p + "experts.h4toh.bias"][e]))


@pytest.mark.parametrize("task", [0, 1])
def test_moe_against_loops(task):
    w = init_weights(CFG, seed=4)
    h = np.random.default_rng(1).normal(size=(CFG.num_tokens, CFG.embed_dim))
    p = "blocks.1.mlp."
    trace = {}
    got = moe(CFG, h, w, 1, task, trace, p)
    gate = w[f"{p}gate.{task}.w_gate"]
    for i in range(CFG.num_tokens):
        logits = [sum(h[i, c] * float(gate[c, e]) for c in range(CFG.embed_dim))
                  for e in range(CFG.num_experts)]
        z = sum(math.exp(v) for v in logits)
        probs = [math.exp(v) / z for v in logits]
        order = sorted(range(CFG.num_experts), key=lambda e: (-probs[e], e))[:CFG.top_k]
        y = sum(probs[e] * _expert(w, p, e, h[i]) for e in order)   # not renormalised
        assert np.allclose(got[i], y, rtol=1e-9, atol=1e-9), i
        assert trace[p + "topk_idx"][i].tolist() == order
        assert np.allclose(trace[p + "topk_probs"][i], [probs[e] for e in order], rtol=1e-12)
        assert np.allclose(trace[p + "gate_logits"][i], logits, rtol=1e-12, atol=1e-12)
    assert trace[p + "topk_idx"].dtype == np.int64


def test_moe_degenerate_routing():
    # A zero gate ties every expert: all tokens go to experts 0 and 1 (lower ids win),
    # experts 2 and 3 stay empty, and each chosen expert is weighted 1/E.
    w = init_weights(CFG, seed=4)
    w["blocks.1.mlp.gate.0.w_gate"][...] = 0
    h = np.random.default_rng(3).normal(size=(CFG.num_tokens, CFG.embed_dim))
    trace = {}
    got = moe(CFG, h, w, 1, 0, trace, "x.")
    assert (trace["x.topk_idx"] == [0, 1]).all() and np.allclose(trace["x.topk_probs"], 0.25)
    for i in range(CFG.num_tokens):
        ref = 0.25 * (_expert(w, "blocks.1.mlp.", 0, h[i]) + _expert(w, "blocks.1.mlp.", 1, h[i]))
        assert np.allclose(got[i], ref, rtol=1e-9, atol=1e-9)


def test_moe_bad_block_or_task():
    w = init_weights(CFG)
    h = np.zeros((CFG.num_tokens, CFG.embed_dim))
    with pytest.raises(ValueError, match=r"^block 0 is not a MoE block \(moe_blocks=\(1,\)\)$"):
        moe(CFG, h, w, 0, 0)
    with pytest.raises(ValueError, match=r"task must be in \[0, num_tasks-1=1\], got -1"):
        moe(CFG, h, w, 1, -1)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_topk_ties_go_to_the_lower_id(k):
    assert topk(np.zeros((2, 6)), k).tolist() == [list(range(k))] * 2
    assert topk(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]]), k).tolist() == [[1, 2, 4, 3][:k]]
    assert topk(np.array([[0.1, 0.2, 0.7, 0.2, 0.7, 0.1]]), k).tolist() == [[2, 4, 1, 3][:k]]
    assert topk(np.zeros((3, 6)), k).dtype == np.int64


def test_topk_bad_k():
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\], got 5"):
        topk(np.zeros((1, 4)), 5)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\], got 0"):
        topk(np.zeros((1, 4)), 0)


def test_forward_composes_the_blocks():
    w = init_weights(CFG, seed=2)
    out, tr = forward(CFG, w, random_image(CFG), task=1, trace=True)
    assert np.array_equal(out, tr["blocks.1.out"]) and out.dtype == np.float64
    x = tr["embed"]
    for b in range(CFG.depth):
        p = f"blocks.{b}."
        ln1 = layer_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], 1e-6)
        assert np.allclose(tr[p + "norm1"], ln1, rtol=1e-12, atol=1e-12)
        assert np.allclose(tr[p + "x_attn"], x + tr[p + "attn.proj"], rtol=1e-12, atol=1e-12)
        assert np.allclose(tr[p + "out"], tr[p + "x_attn"] + tr[p + "mlp.out"],
                           rtol=1e-12, atol=1e-12)
        x = tr[p + "out"]
    assert np.allclose(tr["blocks.0.mlp.gelu"], gelu(tr["blocks.0.mlp.fc1"]))
    # Block 1 routes with the gate of task 1, fed the LN2 output.
    assert np.allclose(tr["blocks.1.mlp.gate_logits"],
                       tr["blocks.1.norm2"] @ w["blocks.1.mlp.gate.1.w_gate"].astype(np.float64))
    assert np.array_equal(forward(CFG, w, random_image(CFG), task=1), out)     # deterministic
    assert not np.allclose(forward(CFG, w, random_image(CFG), task=0), out)


def test_gate_probabilities_are_not_renormalised():
    w = init_weights(CFG, seed=2)
    _, trace = forward(CFG, w, random_image(CFG), trace=True)
    chosen = trace["blocks.1.mlp.topk_probs"]
    assert (chosen.sum(axis=1) < 1).all()
    assert (np.diff(chosen, axis=1) <= 0).all()
    assert np.allclose(np.take_along_axis(trace["blocks.1.mlp.gate_probs"],
                                          trace["blocks.1.mlp.topk_idx"], 1), chosen)


def test_random_image():
    image = random_image(CFG, seed=7)
    assert image.shape == (3, 32, 48) and image.dtype == np.float64
    assert image.min() >= 0 and image.max() < 1
    assert np.array_equal(image * 256, np.round(image * 256))
    assert np.array_equal(image, random_image(CFG, seed=7))
    assert not np.array_equal(image, random_image(CFG, seed=8))
    # Spatial structure: horizontal neighbours correlate far more than white noise would.
    a, b = image[:, :, :-1].ravel(), image[:, :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_bad_inputs_are_named():
    w = init_weights(CFG)
    with pytest.raises(ValueError, match=r"image must have shape \(3, 32, 48\), got \(3, 48, 32\)"):
        forward(CFG, w, np.zeros((3, 48, 32)))
    with pytest.raises(ValueError, match=r"image must have shape \(3, 32, 48\), got \(32, 48\)"):
        patchify(CFG, np.zeros((32, 48)))
    for task in (2, -1, True, 0.0):
        with pytest.raises(ValueError, match=rf"task must be in \[0, num_tasks-1=1\], got {task}"):
            forward(CFG, w, random_image(CFG), task=task)
    with pytest.raises(ValueError, match="image holds NaN or inf"):
        forward(CFG, w, np.full((3, 32, 48), np.nan))
    del w["blocks.0.norm1.bias"]
    with pytest.raises(WeightError, match="missing tensor 'blocks.0.norm1.bias'"):
        forward(CFG, w, random_image(CFG))


def _trace_shapes(cfg):
    n, d, hd, heads = cfg.num_tokens, cfg.embed_dim, cfg.head_dim, cfg.num_heads
    e, k = cfg.num_experts, cfg.top_k
    shapes = {"embed": (n, d)}
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        shapes.update({p + "norm1": (n, d), p + "attn.q": (heads, n, hd),
                       p + "attn.k": (heads, n, hd), p + "attn.v": (heads, n, hd),
                       p + "attn.scores": (heads, n, n),
                       p + "attn.probs": (heads, n, n), p + "attn.out": (n, d),
                       p + "attn.proj": (n, d), p + "x_attn": (n, d), p + "norm2": (n, d)})
        if cfg.is_moe(b):
            shapes.update({p + "mlp.gate_logits": (n, e), p + "mlp.gate_probs": (n, e),
                           p + "mlp.topk_idx": (n, k), p + "mlp.topk_probs": (n, k)})
        else:
            shapes.update({p + "mlp.fc1": (n, cfg.mlp_hidden), p + "mlp.gelu": (n, cfg.mlp_hidden)})
        shapes.update({p + "mlp.out": (n, d), p + "out": (n, d)})
    return shapes


def test_m3vit_tiny_frame_end_to_end():
    cfg = m3vit_tiny()
    w = init_weights(cfg, seed=0)
    out, trace = forward(cfg, w, random_image(cfg), task=0, trace=True)
    assert out.shape == (129, 192) and out.dtype == np.float64 and np.isfinite(out).all()
    assert {k: v.shape for k, v in trace.items()} == _trace_shapes(cfg)
    assert len(trace) == 1 + 12 * 12 + 6 * 2 + 6 * 4
    assert all(np.isfinite(v).all() for v in trace.values())
    # The random weights look like a trained ViT (the integer model is quantized from them):
    # unit-ish embedding, a gently growing residual stream, gates neither uniform nor one-hot.
    assert 0.8 < trace["embed"].std() < 1.5 and 1.5 < out.std() < 3
    for b in cfg.moe_blocks:
        top = trace[f"blocks.{b}.mlp.topk_probs"]
        assert 2 / 16 < top[:, 0].mean() < 0.9 and (top.sum(axis=1) < 1).all()


def test_the_hook_sees_every_traced_activation_and_its_result_flows_on():
    weights = init_weights(CFG, seed=3)
    image = random_image(CFG, seed=4)
    out, trace = forward(CFG, weights, image, 1, trace=True)
    seen = []

    def identity(name, value):
        seen.append(name)
        return value

    same, same_trace = forward(CFG, weights, image, 1, trace=True, hook=identity)
    assert np.array_equal(same, out)
    derived = ("gate_probs", "topk_idx", "topk_probs")        # from the hooked gate logits
    assert {n for n in trace if not n.endswith(derived)} <= set(seen)
    assert list(same_trace) == list(trace)
    experts = {n for n in seen if ".experts." in n}
    assert experts and all(n.endswith((".fc1", ".gelu")) for n in experts)

    # What the hook returns is what the model goes on with (and what the trace holds).
    def rounded(name, value):
        return np.round(value, 1) if name.endswith("attn.v") else value

    got, got_trace = forward(CFG, weights, image, 1, trace=True, hook=rounded)
    assert not np.array_equal(got, out)
    assert np.array_equal(got_trace["blocks.0.attn.v"], np.round(trace["blocks.0.attn.v"], 1))
