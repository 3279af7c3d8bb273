"""RepQ-ViT scale re-parameterisation: channel-wise post-LayerNorm quantizers become one per tensor.

A LayerNorm output ``y`` (channels ``c``) quantized per channel with ``(scale_c, zp_c)``
is equivalent to the output ``y' = y / r_c - b_c`` of a re-parameterised LayerNorm
quantized per tensor with ``(scale*, zp*)``, where

    scale* = mean(scale_c),  zp* = round_half_up(mean(zp_c)),
    r_c = scale_c / scale*,  b_c = zp* - zp_c   (in units of scale*, i.e. b_c * scale*),

so ``gamma'_c = gamma_c / r_c`` and ``beta'_c = beta_c / r_c - b_c * scale*``. The
linear layers that read ``y`` take ``W'[:, c] = W[:, c] * r_c`` and
``bias' = bias + W' @ (b * scale*)``: the function is unchanged, and because
``zp*`` is an integer the per-tensor codes equal the per-channel codes exactly
(tests/test_golden_reparam.py). For a MoE block, LN2 feeds the gate of every task
and every expert's fc1, so all of them are folded (the gate then needs a bias).
"""

import numpy as np

from .quant import round_half_up

__all__ = ["per_tensor_target", "reparam_layernorm", "reparam_linear"]


def per_tensor_target(scale_c, zp_c):
    """``(scale*, zp*, r, b)`` for channel-wise ``(scale_c, zp_c)`` (see the module docstring)."""
    scale_c = np.asarray(scale_c, np.float64)
    zp_c = np.asarray(zp_c, np.float64)
    if scale_c.shape != zp_c.shape or scale_c.ndim != 1:
        raise ValueError(f"scale_c and zp_c must be 1-D of equal length, got {scale_c.shape}, "
                         f"{zp_c.shape}")
    if np.any(scale_c <= 0) or not np.all(np.isfinite(scale_c)):
        raise ValueError("scale_c must be finite and positive")
    scale = float(scale_c.mean())
    zp = int(round_half_up(zp_c.mean()))
    r = scale_c / scale
    b = (zp - zp_c) * scale
    return scale, zp, r, b


def reparam_layernorm(gamma, beta, r, b):
    """The LayerNorm affine that outputs ``y / r - b`` instead of ``y``."""
    return np.asarray(gamma) / r, np.asarray(beta) / r - b


def reparam_linear(weight, bias, r, b):
    """The linear layer (``[out, in]``; ``bias`` may be None) that reads ``y / r - b`` and
    computes what it computed on ``y``: ``W' = W * r``, ``bias' = bias + W' @ b``."""
    w = np.asarray(weight, np.float64) * r
    out_bias = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return w, out_bias + w @ b
