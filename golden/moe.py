"""Integer expert gating: top-k selection, per-expert token dispatch, score-weighted combine.

The gate's int16 log2-domain logits ``u`` (see :mod:`golden.softmax`) give both the
selection and the weights:

* :func:`topk` picks the k largest ``u`` per token. Softmax is monotonic, so this is
  the top-k of the probabilities; the tie rule is the reference hardware's (strict
  ``>`` insertion sort): **the lower expert id wins a tie**.
* the weight of a chosen expert is its un-renormalised softmax probability in Q0.8
  (:func:`golden.softmax.softmax_u8` over all experts);
* :func:`dispatch` builds one queue per expert (token indices ascending, with their
  scores) and the ascending list of experts whose queue is not empty;
* :func:`combine` sums ``p * y`` over each token's experts exactly in int32 and
  rounds once: ``sat16(round_shift(sum_k p_k * y_k, 8))``.
"""

from dataclasses import dataclass

import numpy as np

from .quant import round_shift

__all__ = ["TOPK_MAX", "topk", "Dispatch", "dispatch", "combine"]

#: Largest supported k (the gating datapath keeps k sorted registers).
TOPK_MAX = 4


def topk(u, k):
    """Indices of the ``k`` largest values per row, largest first; ties go to the lower index.

    Parameters
    ----------
    u : int array, shape (M, E)
        Integer logits (any integer width).
    k : int
        In ``[1, min(E, TOPK_MAX)]``.

    Returns
    -------
    numpy.ndarray of int64, shape (M, k)
    """
    u = np.asarray(u)
    if u.ndim != 2:
        raise ValueError(f"u must have shape (M, E), got {u.shape}")
    if not np.issubdtype(u.dtype, np.integer):
        raise TypeError(f"u must be an integer array, not {u.dtype}")
    if not 1 <= k <= min(u.shape[1], TOPK_MAX):
        raise ValueError(f"k must be in [1, min(E={u.shape[1]}, {TOPK_MAX})], got {k}")
    return np.argsort(-u.astype(np.int64), axis=1, kind="stable")[:, :k]


@dataclass(frozen=True)
class Dispatch:
    """Per-expert token queues.

    Members
    -------
    tokens : tuple of int64 arrays, one per expert
        Token indices routed to the expert, ascending (queue order).
    scores : tuple of uint8 arrays, one per expert
        The Q0.8 gate probability of each queued token for that expert.
    active : tuple of int
        Experts with a non-empty queue, ascending: the order the linear kernel runs them.
    """

    tokens: tuple
    scores: tuple
    active: tuple

    @property
    def lengths(self):
        """Queue length per expert."""
        return tuple(len(t) for t in self.tokens)


def dispatch(idx, probs, num_experts):
    """Build the token queues from top-k indices and the full Q0.8 probability matrix.

    Parameters
    ----------
    idx : int array, shape (M, k)
        From :func:`topk`; each row holds distinct experts.
    probs : uint8 array, shape (M, E)
        From :func:`golden.softmax.softmax_u8`.
    num_experts : int
        ``E``.
    """
    idx = np.asarray(idx, np.int64)
    probs = np.asarray(probs)
    if idx.ndim != 2 or probs.shape != (idx.shape[0], num_experts):
        raise ValueError(f"idx (M, k) and probs (M, {num_experts}) disagree: {idx.shape}, {probs.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= num_experts):
        raise ValueError(f"idx must be in [0, {num_experts - 1}]")
    tokens, scores = [], []
    for e in range(num_experts):
        t = np.flatnonzero((idx == e).any(axis=1))
        tokens.append(t)
        scores.append(probs[t, e].astype(np.uint8))
    active = tuple(e for e in range(num_experts) if len(tokens[e]))
    return Dispatch(tuple(tokens), tuple(scores), active)


def combine(routes, outputs, num_tokens, dim):
    """Score-weighted sum of expert outputs per token, in the int16 residual format.

    ``acc[t] = sum over experts e holding t of p[t, e] * y_e[t]`` (exact, at most
    ``TOPK_MAX * 255 * 2**15 < 2**25``), ``out = sat16(round_shift(acc, 8))``.
    Tokens no expert received get 0.

    Parameters
    ----------
    routes : Dispatch
    outputs : dict {expert: int16 array of shape (len(queue), dim)}
        Each active expert's output rows, in queue order, at the residual scale.
    num_tokens, dim : int

    Returns
    -------
    numpy.ndarray of int16, shape (num_tokens, dim)
    """
    acc = np.zeros((num_tokens, dim), np.int64)
    for e in routes.active:
        y = np.asarray(outputs[e], np.int64)
        if y.shape != (len(routes.tokens[e]), dim):
            raise ValueError(f"expert {e} output has shape {y.shape}, "
                             f"expected ({len(routes.tokens[e])}, {dim})")
        acc[routes.tokens[e]] += routes.scores[e].astype(np.int64)[:, None] * y
    return np.clip(round_shift(acc, 8), -32768, 32767).astype(np.int16)
