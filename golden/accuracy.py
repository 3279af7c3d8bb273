"""Accuracy of a quantized classifier against its float model: top-1, per-layer SQNR, routing.

:func:`float_reference` runs the float model once over an evaluation set and keeps
what the comparisons need; :func:`evaluate` runs a :class:`~golden.int_model.QuantParams`
through the integer forward on the same images and reports

* top-1 accuracy (integer logits, ``argmax`` with ties to the lower class) and the
  share of images whose prediction equals the float model's;
* per traced tensor, the SQNR pooled over the images (signal and noise energies
  summed over every image, then one ratio), integer dequantized vs float;
* per MoE block, the expert-routing agreement with the float gate
  (:func:`golden.metrics.routing_agreement`, over every token of every image).
"""

import math
from dataclasses import dataclass

import numpy as np

from .float_model import classify
from .int_model import int_classify, pixels_from_image
from .metrics import routing_agreement

__all__ = ["FloatReference", "TracePool", "float_reference", "evaluate"]

# Traced values that are not compared as values (indices, probabilities in another
# domain than the float model's, log2 codes).
_SKIP = ("topk_idx", "gate_probs", "topk_probs", "attn.probs", "attn.codes")


def _identity(iterable, description):
    return iterable


class TracePool:
    """Per-layer SQNR and routing agreement pooled over images: :meth:`add` a float trace
    and the integer model's dequantized trace (:meth:`golden.int_model.IntTrace.dequantized`)
    per image."""

    def __init__(self):
        self.signal, self.noise, self.routes = {}, {}, {}

    def add(self, ref, deq):
        for name, value in ref.items():
            if name.endswith("topk_idx"):
                self.routes.setdefault(name.removesuffix(".mlp.topk_idx"), []).append(
                    (value, deq[name]))
            elif name in deq and not name.endswith(_SKIP):
                r = np.asarray(value, np.float64)
                self.signal[name] = self.signal.get(name, 0.0) + float((r * r).sum())
                self.noise[name] = self.noise.get(name, 0.0) + float(((r - deq[name]) ** 2).sum())

    def sqnr_db(self):
        """``{layer: SQNR in dB}`` in trace order (inf where the integer model is exact)."""
        return {name: (10 * math.log10(self.signal[name] / self.noise[name])
                       if self.noise[name] else math.inf) for name in self.signal}

    def routing(self):
        """``{MoE block: agreement of the top-k expert sets}``."""
        return {block: routing_agreement(np.concatenate([a for a, _ in pairs]),
                                         np.concatenate([b for _, b in pairs]))
                for block, pairs in self.routes.items()}


@dataclass
class FloatReference:
    """The float model's results on an evaluation set.

    Members
    -------
    labels : numpy.ndarray of int64, shape (n,)
    predictions : numpy.ndarray of int64, shape (n,)
    traces : list of dict
        Per image, the float trace (:func:`golden.float_model.classify`).
    """

    labels: np.ndarray
    predictions: np.ndarray
    traces: list

    @property
    def accuracy(self):
        """float: top-1 accuracy of the float model."""
        return float((self.predictions == self.labels).mean())


def _check_set(images, labels):
    labels = np.asarray(labels)
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"images and labels must be non-empty and of equal length, got "
                         f"{len(images)} and {len(labels)}")
    return labels.astype(np.int64)


def float_reference(cfg, weights, images, labels, task=0, progress=None):
    """Run the float classifier over ``images`` (see :class:`FloatReference`)."""
    labels = _check_set(images, labels)
    traces, preds = [], []
    for image in (progress or _identity)(images, "float model"):
        logits, tr = classify(cfg, weights, image, task, trace=True)
        preds.append(int(np.argmax(logits)))
        traces.append(tr)
    return FloatReference(labels, np.array(preds, np.int64), traces)


def evaluate(qp, images, reference, task=0, progress=None):
    """Integer top-1, agreement with the float predictions, pooled per-layer SQNR and routing.

    Parameters
    ----------
    qp : QuantParams
        Of a classifier config (``num_classes`` > 0).
    images : sequence of float arrays (C, H, W)
        The images of ``reference``, in the same order.
    reference : FloatReference
    task : int
    progress : callable, optional
        ``progress(iterable, description)`` wraps the per-image loop.

    Returns
    -------
    dict
        ``accuracy``, ``predictions`` (list of int), ``float_agreement`` (share of
        equal predictions),
        ``sqnr_db`` (name -> pooled SQNR in dB, trace order) and ``routing``
        (MoE block name -> agreement).
    """
    if len(images) != len(reference.labels):
        raise ValueError(f"images has {len(images)} entries, the reference {len(reference.labels)}")
    pool, preds = TracePool(), []
    for image, ref in zip((progress or _identity)(images, "integer model"), reference.traces,
                          strict=True):
        logits, tr = int_classify(qp, pixels_from_image(qp.config, image), task, trace=True)
        preds.append(int(np.argmax(logits)))
        pool.add(ref, tr.dequantized())
    preds = np.array(preds, np.int64)
    return {"accuracy": float((preds == reference.labels).mean()), "predictions": preds.tolist(),
            "float_agreement": float((preds == reference.predictions).mean()),
            "sqnr_db": pool.sqnr_db(), "routing": pool.routing()}
