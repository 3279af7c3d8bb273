"""Accuracy of a quantized classifier against its float model: top-1, per-layer SQNR, routing.

:func:`float_reference` runs the float model once over an evaluation set and keeps
what the comparisons need; :func:`evaluate` runs a :class:`~golden.int_model.QuantParams`
through the integer forward on the same images and reports

* top-1 accuracy (integer logits, ``argmax`` with ties to the lower class) and the
  share of images whose prediction equals the float model's;
* per traced tensor, the SQNR pooled over the images (signal and noise energies
  summed over every image, then one ratio), integer dequantized vs float;
* per MoE block, the expert-routing agreement with the float gate
  (:func:`golden.metrics.routing_agreement`, over every token of every image), and
  where its loss comes from (:func:`routing_sources`).
"""

import math
from dataclasses import dataclass

import numpy as np

from .float_model import classify, topk as float_topk
from .int_model import int_classify, pixels_from_image
from .metrics import routing_agreement
from .moe import topk
from .quant import linear, quantize, requantize

__all__ = ["FloatReference", "TracePool", "SOURCES", "routing_sources", "float_reference",
           "evaluate"]

#: The partial models of :func:`routing_sources`, each against the float top-k.
SOURCES = {
    "upstream": "float gate on the integer model's LN2 output (everything before the gate)",
    "gate_input": "float gate on the float LN2 output through the LN2 quantizer alone",
    "gate_path": "integer gate path (int8 weights, int16 logits, top-k) on those codes",
}


def routing_sources(qp, weights, ref, trace, task=0):
    """Where routing disagreement comes from, per MoE block of one image: the top-k of the
    three partial models of :data:`SOURCES`.

    Parameters
    ----------
    qp : QuantParams
    weights : mapping
        The float weights ``qp`` was calibrated from (the float gate ``w_gate``).
    ref : dict
        The float trace of the image (``norm2``, ``mlp.topk_idx`` of every MoE block).
    trace : IntTrace
        The integer trace of the same image (``norm2`` codes).
    task : int

    Returns
    -------
    dict
        ``{block: {source: int64 array (N, k)}}``, blocks as ``"blocks.<b>"``.
    """
    cfg, bits = qp.config, int(qp.scalar("quant.act_bits"))
    out = {}
    for b in cfg.moe_blocks:
        p = f"blocks.{b}."
        scale, zp = qp[p + "norm2.scale"], qp[p + "norm2.zero_point"]
        w_gate = np.asarray(weights[f"{p}mlp.gate.{task}.w_gate"], np.float64)
        codes = quantize(ref[p + "norm2"], scale, zp, bits)
        g = f"{p}mlp.gate.{task}."
        u = requantize(linear(codes, qp[g + "weight"], qp[g + "bias"]), qp[g + "mult"],
                       qp[g + "shift"], bits=16)
        out[p[:-1]] = {
            "upstream": float_topk((scale * (trace[p + "norm2"] - zp)) @ w_gate, cfg.top_k),
            "gate_input": float_topk((scale * (codes - zp)) @ w_gate, cfg.top_k),
            "gate_path": topk(u, cfg.top_k)}
    return out

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
        self.signal, self.noise, self.routes, self.sources = {}, {}, {}, {}

    def add(self, ref, deq, sources=None):
        """Pool one image; ``sources`` (optional) is its :func:`routing_sources`."""
        for block, picks in (sources or {}).items():
            for source, idx in picks.items():
                self.sources.setdefault(block, {}).setdefault(source, []).append(
                    (ref[block + ".mlp.topk_idx"], idx))
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
        return {block: _agreement(pairs) for block, pairs in self.routes.items()}

    def routing_sources(self):
        """``{MoE block: {source: agreement}}`` of the pooled :func:`routing_sources`."""
        return {block: {source: _agreement(pairs) for source, pairs in by_source.items()}
                for block, by_source in self.sources.items()}


def _agreement(pairs):
    return routing_agreement(np.concatenate([a for a, _ in pairs]),
                             np.concatenate([b for _, b in pairs]))


@dataclass
class FloatReference:
    """The float model's results on an evaluation set.

    Members
    -------
    labels : numpy.ndarray of int64, shape (n,)
    predictions : numpy.ndarray of int64, shape (n,)
    traces : list of dict
        Per image, the float trace (:func:`golden.float_model.classify`).
    weights : mapping
        The float weights (:func:`routing_sources` reads the gates).
    """

    labels: np.ndarray
    predictions: np.ndarray
    traces: list
    weights: dict

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
    return FloatReference(labels, np.array(preds, np.int64), traces, weights)


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
        ``sqnr_db`` (name -> pooled SQNR in dB, trace order), ``routing``
        (MoE block name -> agreement) and ``routing_sources`` (MoE block name ->
        source -> agreement, :func:`routing_sources`).
    """
    if len(images) != len(reference.labels):
        raise ValueError(f"images has {len(images)} entries, the reference {len(reference.labels)}")
    pool, preds = TracePool(), []
    for image, ref in zip((progress or _identity)(images, "integer model"), reference.traces,
                          strict=True):
        logits, tr = int_classify(qp, pixels_from_image(qp.config, image), task, trace=True)
        preds.append(int(np.argmax(logits)))
        pool.add(ref, tr.dequantized(), routing_sources(qp, reference.weights, ref, tr, task))
    preds = np.array(preds, np.int64)
    return {"accuracy": float((preds == reference.labels).mean()), "predictions": preds.tolist(),
            "float_agreement": float((preds == reference.predictions).mean()),
            "sqnr_db": pool.sqnr_db(), "routing": pool.routing(),
            "routing_sources": pool.routing_sources()}
