"""Error metrics between a reference and a test tensor (float vs integer model, or RTL vs golden)."""

import math

import numpy as np

__all__ = ["max_abs_error", "sqnr_db", "cosine_similarity", "routing_agreement", "compare_traces"]


def _pair(ref, test):
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"shapes differ: reference {ref.shape}, test {test.shape}")
    return ref, test


def max_abs_error(ref, test):
    """``max |ref - test|`` (0 for empty tensors)."""
    ref, test = _pair(ref, test)
    return float(np.abs(ref - test).max(initial=0.0))


def sqnr_db(ref, test):
    """Signal-to-quantization-noise ratio ``10 log10(sum ref^2 / sum (ref - test)^2)``; inf if equal."""
    ref, test = _pair(ref, test)
    noise = float(((ref - test) ** 2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(float((ref ** 2).sum()) / noise) if (ref ** 2).sum() else -math.inf


def cosine_similarity(ref, test):
    """Cosine of the angle between the flattened tensors (1.0 for two zero tensors)."""
    ref, test = _pair(ref, test)
    a, b = ref.ravel(), test.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def routing_agreement(idx_ref, idx_test):
    """Fraction of tokens (rows) whose set of chosen experts is the same (order ignored)."""
    idx_ref, idx_test = np.asarray(idx_ref), np.asarray(idx_test)
    if idx_ref.shape != idx_test.shape or idx_ref.ndim != 2:
        raise ValueError(f"expert index shapes differ or are not (tokens, k): "
                         f"{idx_ref.shape}, {idx_test.shape}")
    if idx_ref.shape[0] == 0:
        return 1.0
    same = (np.sort(idx_ref, axis=1) == np.sort(idx_test, axis=1)).all(axis=1)
    return float(same.mean())


def compare_traces(ref, test, names=None):
    """Per traced tensor present in both: shape, max abs error, SQNR, cosine (or routing agreement).

    Returns a list of dicts in the reference trace's order; ``*.topk_idx`` entries
    carry ``routing_agreement`` instead of the value metrics.
    """
    rows = []
    for name in names or ref:
        if name not in ref or name not in test:
            continue
        if name.endswith("topk_idx"):
            rows.append({"name": name, "shape": list(np.shape(ref[name])),
                         "routing_agreement": routing_agreement(ref[name], test[name])})
            continue
        r, t = _pair(ref[name], test[name])
        rows.append({"name": name, "shape": list(r.shape), "max_abs_error": max_abs_error(r, t),
                     "sqnr_db": sqnr_db(r, t), "cosine": cosine_similarity(r, t)})
    return rows
