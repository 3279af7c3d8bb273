"""Host side of the top-k and dispatch units: stimulus words and expected beats from ``golden/``.

Shared by the Amaranth-simulator tests and the cocotb testbench. A frame is an int
array of gate logits ``u`` (tokens x experts); its probabilities are
``golden.softmax.softmax_u8(u)``, its choices ``golden.moe.topk(u, k)`` and its queues
``golden.moe.dispatch``. Words are packed through the units' own layouts.
"""

import numpy as np

from golden.moe import dispatch, topk
from golden.quant import dyadic
from golden.softmax import softmax_u8
from rtl import topk as topk_rtl

from .linear_images import expected_rows, job_image, token_beats
from moevit.packing import pack, unpack

__all__ = ["routes", "topk_words", "topk_beats", "dispatch_words", "dispatch_beats",
           "check_beats", "gate_tasks", "gating_streams"]


def routes(u, k):
    """``golden.moe.dispatch`` of frame ``u``: its per-expert queues."""
    u = np.asarray(u)
    return dispatch(topk(u, k), softmax_u8(u), u.shape[1])


def topk_words(frames, lanes):
    """TopK input words: every frame's rows, ``lanes`` logits (and probabilities) per beat."""
    words = []
    layout = topk_rtl.in_layout(lanes)
    for u in frames:
        u = np.asarray(u)
        p = softmax_u8(u)
        tokens, experts = u.shape
        beats = experts // lanes
        for t in range(tokens):
            for b in range(beats):
                sl = slice(b * lanes, (b + 1) * lanes)
                words.append(pack(layout, {"u": u[t, sl], "p": p[t, sl], "token": t,
                                           "last": int(t == tokens - 1 and b == beats - 1)}))
    return words


def topk_beats(frames, k):
    """Expected TopK output beats (dicts) of every frame: the golden choices per token."""
    beats = []
    for u in frames:
        u = np.asarray(u)
        idx, p = topk(u, k), softmax_u8(u)
        chosen = np.take_along_axis(p, idx, axis=1)
        beats += [{"token": t, "idx": list(idx[t]), "p": list(chosen[t]),
                   "last": int(t == len(u) - 1)} for t in range(len(u))]
    return beats


def dispatch_words(frames, k):
    """Dispatcher input words: the golden TopK beats of every frame."""
    experts = np.asarray(frames[0]).shape[1]
    layout = topk_rtl.out_layout(experts, k)
    return [pack(layout, beat) for beat in topk_beats(frames, k)]


def dispatch_beats(frames, k):
    """Expected ``(o_experts, o_tokens)`` beats of every frame, from ``golden.moe.dispatch``."""
    experts, tokens = [], []
    for u in frames:
        r = routes(u, k)
        experts += [{"expert": e, "count": len(r.tokens[e]), "end": int(e == r.active[-1])}
                    for e in r.active]
        for e in r.active:
            n = len(r.tokens[e])
            tokens += [{"token": int(t), "score": int(s), "expert": e, "first": int(j == 0),
                        "last": int(j == n - 1), "end": int(j == n - 1 and e == r.active[-1])}
                       for j, (t, s) in enumerate(zip(r.tokens[e], r.scores[e]))]
    return experts, tokens


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [int(v) for v in value]
    return int(value)


def check_beats(name, layout, words, expected):
    """Assert that ``words`` unpack (through ``layout``) to the ``expected`` dicts, in order."""
    got = [_plain(unpack(layout, w)) for w in words]
    expected = [_plain(e) for e in expected]
    for n, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            raise AssertionError(f"{name} beat {n}: got {g}, expected {e}")
    if len(got) != len(expected):
        raise AssertionError(f"{name}: {len(got)} beats, expected {len(expected)}")



def gate_tasks(rng, experts, d_in, tasks=2, spread=400):
    """Random int8 gate matrices, one per task, requantized to int16 log2-domain logits.

    The requantizer maps a typical accumulator to about ``spread`` (1/64 of an octave
    each), so routings are neither one-hot nor flat.
    """
    mult, shift = dyadic(np.full(experts, spread / (128 * 128 * np.sqrt(d_in))))
    return [{"weight": rng.integers(-128, 128, (experts, d_in)), "bias": np.zeros(experts, int),
             "mult": mult, "shift": shift, "zero_point": 0, "bits": 16, "gelu_table": None}
            for _ in range(tasks)]


def gating_streams(config, gates, x, schedule):
    """``(w words, x words, frames of logits)`` for a :class:`rtl.gating_path.GatingPath`.

    ``schedule`` lists ``(task, tokens)`` per frame: the gate image of ``gates[task]``,
    then rows ``0 .. tokens-1`` of ``x`` (the LN2 output). The frames' logits are the
    golden linear op (``golden.quant`` through :func:`sim.linear_images.expected_rows`).
    """
    w_words, x_words, frames = [], [], []
    for n, (task, tokens) in enumerate(schedule):
        job = gates[task] | {"tokens": list(range(tokens)), "scores": np.zeros(tokens, int)}
        w_words += job_image(config, f"gate of task {task} (frame {n})", job)
        x_words += token_beats(config, x, job["tokens"])
        frames.append(expected_rows(job, x))
    return w_words, x_words, frames
