"""Error metrics between a reference and a test tensor (float vs integer model, or RTL vs golden).

Every function takes the reference first, compares in float64, and raises
``ValueError`` naming both shapes when they differ. Routing (which experts a token
chose) is compared separately from values, as the reference testbenches do: one
token switching experts moves values a lot but is expected near a tie.
"""

import math

import numpy as np

__all__ = ["max_abs_error", "sqnr_db", "cosine_similarity", "routing_agreement", "compare_traces"]


def _pair(ref, test):
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"shapes differ: reference {ref.shape}, test {test.shape}")
    return ref, test


def max_abs_error(ref, test):
    """Largest absolute difference.

    Parameters
    ----------
    ref, test : array_like of numbers, same shape

    Returns
    -------
    float
        ``max |ref - test|``; 0 for empty tensors.
    """
    ref, test = _pair(ref, test)
    return float(np.abs(ref - test).max(initial=0.0))


def sqnr_db(ref, test):
    """Signal-to-quantization-noise ratio in dB.

    Parameters
    ----------
    ref, test : array_like of numbers, same shape

    Returns
    -------
    float
        ``10 * log10(sum(ref**2) / sum((ref - test)**2))``; ``math.inf`` when the
        tensors are equal, ``-math.inf`` when ``ref`` is all zero and ``test`` is not.
    """
    ref, test = _pair(ref, test)
    noise = float(((ref - test) ** 2).sum())
    if noise == 0:
        return math.inf
    signal = float((ref ** 2).sum())
    return 10 * math.log10(signal / noise) if signal else -math.inf


def cosine_similarity(ref, test):
    """Cosine of the angle between the flattened tensors.

    Parameters
    ----------
    ref, test : array_like of numbers, same shape

    Returns
    -------
    float
        In [-1, 1]; 1.0 when both are all zero, 0.0 when exactly one is.
    """
    ref, test = _pair(ref, test)
    a, b = ref.ravel(), test.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def routing_agreement(idx_ref, idx_test):
    """Fraction of tokens whose set of chosen experts is the same (order ignored).

    Parameters
    ----------
    idx_ref, idx_test : array_like of int, shape (tokens, k)
        Expert indices per token, as the ``*.topk_idx`` trace entries.

    Returns
    -------
    float
        In [0, 1]; 1.0 for zero tokens.

    Raises
    ------
    ValueError
        If the shapes differ or are not 2-D.
    """
    idx_ref, idx_test = np.asarray(idx_ref), np.asarray(idx_test)
    if idx_ref.shape != idx_test.shape or idx_ref.ndim != 2:
        raise ValueError(f"expert index shapes differ or are not (tokens, k): "
                         f"{idx_ref.shape}, {idx_test.shape}")
    if idx_ref.shape[0] == 0:
        return 1.0
    same = (np.sort(idx_ref, axis=1) == np.sort(idx_test, axis=1)).all(axis=1)
    return float(same.mean())


def compare_traces(ref, test, names=None):
    """Compare two traces (e.g. :func:`golden.float_model.forward` and the integer model's).

    Parameters
    ----------
    ref, test : mapping of str to array_like
    names : iterable of str, optional
        Entries to compare, in this order; default all of ``ref``'s, in its order.
        Names missing from either trace are skipped.

    Returns
    -------
    list of dict
        One row per compared name: ``name``, ``shape`` (list of int), then either
        ``max_abs_error``, ``sqnr_db`` and ``cosine`` (values), or, for ``*.topk_idx``
        entries, ``routing_agreement`` only (expert indices are not values).

    Raises
    ------
    ValueError
        ``trace 'X': shapes differ: reference (..), test (..)``.
    """
    rows = []
    for name in ref if names is None else names:
        if name not in ref or name not in test:
            continue
        try:
            if name.endswith("topk_idx"):
                rows.append({"name": name, "shape": list(np.shape(ref[name])),
                             "routing_agreement": routing_agreement(ref[name], test[name])})
                continue
            r, t = _pair(ref[name], test[name])
        except ValueError as exc:
            raise ValueError(f"trace {name!r}: {exc}") from None
        rows.append({"name": name, "shape": list(r.shape), "max_abs_error": max_abs_error(r, t),
                     "sqnr_db": sqnr_db(r, t), "cosine": cosine_similarity(r, t)})
    return rows
