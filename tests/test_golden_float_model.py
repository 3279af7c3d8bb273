"""The float model against loop-based definitions written independently here."""

import math

import numpy as np
import pytest

from golden.config import m3vit_tiny, tiny_test
from golden.float_model import (attention, forward, gelu, layer_norm, moe, patch_embed,
                                random_image, topk)
from golden.weights import init_weights

CFG = tiny_test()


def test_gelu_is_exact_erf_gelu():
    x = np.linspace(-8, 8, 2001)
    ref = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    assert np.abs(gelu(x) - ref).max() < 1e-15


def test_attention_against_loops():
    rng = np.random.default_rng(0)
    n, d, heads, hd = CFG.num_tokens, CFG.embed_dim, CFG.num_heads, CFG.head_dim
    h = rng.normal(size=(n, d))
    w_qkv, b_qkv = rng.normal(size=(3 * d, d)) / 5, rng.normal(size=3 * d)
    w_p, b_p = rng.normal(size=(d, d)) / 5, rng.normal(size=d)
    qkv = [[sum(h[i, c] * w_qkv[o, c] for c in range(d)) + b_qkv[o] for o in range(3 * d)]
           for i in range(n)]
    out = [[0.0] * d for _ in range(n)]
    for j in range(heads):
        for i in range(n):
            s = [sum(qkv[i][j * hd + c] * qkv[m][d + j * hd + c] for c in range(hd)) / math.sqrt(hd)
                 for m in range(n)]
            top = max(s)
            e = [math.exp(v - top) for v in s]
            for c in range(hd):
                out[i][j * hd + c] = sum(e[m] * qkv[m][2 * d + j * hd + c] for m in range(n)) / sum(e)
    ref = [[sum(out[i][c] * w_p[o, c] for c in range(d)) + b_p[o] for o in range(d)] for i in range(n)]
    assert np.allclose(attention(CFG, h, w_qkv, b_qkv, w_p, b_p), ref, rtol=1e-9, atol=1e-9)


def test_moe_against_loops():
    w = init_weights(CFG, seed=4)
    rng = np.random.default_rng(1)
    h = rng.normal(size=(CFG.num_tokens, CFG.embed_dim))
    block, task, p = 1, 1, "blocks.1.mlp."
    got = moe(CFG, h, w, block, task)
    gate = w[f"{p}gate.{task}.w_gate"]
    for i in range(CFG.num_tokens):
        logits = [sum(h[i, c] * float(gate[c, e]) for c in range(CFG.embed_dim))
                  for e in range(CFG.num_experts)]
        z = sum(math.exp(v) for v in logits)
        probs = [math.exp(v) / z for v in logits]
        order = sorted(range(CFG.num_experts), key=lambda e: (-probs[e], e))[:CFG.top_k]
        y = np.zeros(CFG.embed_dim)
        for e in order:                    # un-renormalised probabilities
            a = [sum(h[i, c] * float(w[p + "experts.htoh4.weight"][e, o, c]) for c in range(CFG.embed_dim))
                 + float(w[p + "experts.htoh4.bias"][e, o]) for o in range(CFG.expert_hidden)]
            g = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in a]
            y += probs[e] * np.array([sum(g[o] * float(w[p + "experts.h4toh.weight"][e, c, o])
                                          for o in range(CFG.expert_hidden))
                                      + float(w[p + "experts.h4toh.bias"][e, c])
                                      for c in range(CFG.embed_dim)])
        assert np.allclose(got[i], y, rtol=1e-9, atol=1e-9), i


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_topk_ties_go_to_the_lower_id(k):
    assert topk(np.zeros((2, 6)), k).tolist() == [list(range(k))] * 2
    assert topk(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]]), k).tolist() == [[1, 2, 4, 3][:k]]


def test_gate_probabilities_are_not_renormalised():
    w = init_weights(CFG, seed=2)
    _, trace = forward(CFG, w, random_image(CFG), trace=True)
    chosen = trace["blocks.1.mlp.topk_probs"]
    assert (chosen.sum(axis=1) < 1).all()
    assert np.allclose(np.take_along_axis(trace["blocks.1.mlp.gate_probs"],
                                          trace["blocks.1.mlp.topk_idx"], 1), chosen)


def test_layer_norm_and_embedding():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    assert np.allclose(layer_norm(x, 2.0, 1.0, 0.0), 2 * (x - 3) / math.sqrt(3.5) + 1)
    w = init_weights(CFG)
    image = random_image(CFG, seed=5)
    emb = patch_embed(CFG, w, image)
    assert np.allclose(emb[0], w["cls_token"][0, 0] + w["pos_embed"][0, 0], atol=1e-6)
    # Patch (row 1, col 2) is token 1 + 1 * 3 + 2 = 6: a direct convolution of that window.
    window = image[:, 16:32, 32:48]
    direct = (w["patch_embed.proj.weight"] * window).sum(axis=(1, 2, 3)) + w["patch_embed.proj.bias"]
    assert np.allclose(emb[6], direct + w["pos_embed"][0, 6], atol=1e-5)


def test_m3vit_tiny_frame_end_to_end():
    cfg = m3vit_tiny()
    w = init_weights(cfg, seed=0)
    out, trace = forward(cfg, w, random_image(cfg), task=1, trace=True)
    assert out.shape == (129, 192) and np.isfinite(out).all()
    for b in range(12):
        assert f"blocks.{b}.out" in trace and f"blocks.{b}.attn.probs" in trace
        assert (f"blocks.{b}.mlp.topk_idx" in trace) == cfg.is_moe(b)
    assert trace["blocks.1.attn.scores"].shape == (3, 129, 129)
    assert np.array_equal(out, forward(cfg, w, random_image(cfg), task=1))


def test_bad_inputs_are_named():
    w = init_weights(CFG)
    with pytest.raises(ValueError, match=r"image must have shape \(3, 32, 48\), got \(3, 48, 32\)"):
        forward(CFG, w, np.zeros((3, 48, 32)))
    with pytest.raises(ValueError, match=r"task must be in \[0, num_tasks-1=1\], got 2"):
        forward(CFG, w, random_image(CFG), task=2)
    with pytest.raises(ValueError, match="image holds NaN or inf"):
        forward(CFG, w, np.full((3, 32, 48), np.nan))
