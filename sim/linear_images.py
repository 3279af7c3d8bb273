"""Test side of :class:`rtl.compute.linear.LinearKernel`: token beats, random jobs, output checks.

What a testbench sends on ``x`` and how it reads ``y``, following the formats
documented in :mod:`rtl.compute.linear`; matrix images (``w``) are the host's
(:func:`moevit.images.matrix_image`).
"""

import numpy as np

from golden.gelu import gelu_int
from golden.quant import dyadic, linear, requantize
from moevit.images import matrix_image
from moevit.packing import pack, unpack
from rtl.compute.linear import x_layout, y_layout

__all__ = ["token_beats", "assemble_outputs", "random_job", "job_image",
           "expected_rows", "job_streams", "check_outputs"]


def token_beats(config, x, tokens, scores=None):
    """``x`` beats for the rows ``x[tokens]`` (the gather), ``last`` on the final beat.

    ``x`` is the whole int8 activation matrix (tokens x d_in); ``scores`` (uint8, one
    per listed token) ride along to ``y`` for the score-weighted combine.
    """
    x = np.asarray(x, np.int64)
    kb = -(-x.shape[1] // config.pi)
    padded = np.zeros((x.shape[0], kb * config.pi), np.int64)
    padded[:, :x.shape[1]] = x
    layout = x_layout(config.pi)
    scores = np.zeros(len(tokens), np.int64) if scores is None else np.asarray(scores, np.int64)
    beats = []
    for n, token in enumerate(tokens):
        for s in range(kb):
            beats.append(pack(layout, {
                "data": padded[token, s * config.pi:(s + 1) * config.pi],
                "token": int(token),
                "score": int(scores[n]),
                "last": int(n == len(tokens) - 1 and s == kb - 1),
            }))
    return beats


def assemble_outputs(config, words, d_outs, scores=None):
    """Per batch, ``{token: output row}`` from ``y`` words (batches end at ``last``).

    ``d_outs`` lists the output width of each batch's matrix. Checks that every
    fold of a token arrives exactly once and that the batch count matches. If a
    dict ``scores`` is given, it is filled with ``{(batch, token): score}``.
    """
    layout = y_layout(config.po, config.out_width)
    batches, rows = [], {}
    for word in words:
        beat = unpack(layout, word)
        row = rows.setdefault(beat["token"], {})
        if beat["fold"] in row:
            raise AssertionError(f"batch {len(batches)}: token {beat['token']} "
                                 f"fold {beat['fold']} arrived twice")
        row[beat["fold"]] = beat["data"]
        if scores is not None:
            scores[len(batches), beat["token"]] = beat["score"]
        if beat["last"]:
            batches.append(rows)
            rows = {}
    if rows or len(batches) != len(d_outs):
        raise AssertionError(f"expected {len(d_outs)} batches ending in last, got "
                             f"{len(batches)} and {len(rows)} unterminated rows")
    return [{token: np.concatenate([folds[j] for j in sorted(folds)])[:d_out]
             for token, folds in batch.items()} for batch, d_out in zip(batches, d_outs)]


def random_job(rng, d_in, d_out, tokens, *, bits=None, gelu=False):
    """A test job: random int8 weights, a bias, a requantizer and (optionally) a GELU table.

    A job is a dict: ``weight``, ``bias``, ``mult``, ``shift``, ``zero_point``,
    ``bits``, ``gelu_table`` (or None), ``tokens`` (the gather list) and ``scores``.

    ``bits=None`` passes ``acc + bias`` through (mult 1, shift 0, int32); otherwise the
    requantizer maps the accumulator range onto roughly the output range, with
    some saturation at both ends.
    """
    job = {"weight": rng.integers(-128, 128, (d_out, d_in)), "tokens": list(tokens),
           "scores": rng.integers(0, 256, len(tokens)), "gelu_table": None}
    if bits is None:
        job |= {"bias": rng.integers(-(1 << 24), 1 << 24, d_out), "mult": 1, "shift": 0,
                "zero_point": 0, "bits": 32}
        return job
    span = 128 * 128 * np.sqrt(d_in) * 1.5
    mult, shift = dyadic(rng.uniform(0.5, 2.0, d_out) * (1 << (bits - 1)) / span)
    job |= {"bias": rng.integers(-(1 << 12), 1 << 12, d_out), "mult": mult, "shift": shift,
            "zero_point": int(rng.integers(-20, 20)), "bits": bits}
    if gelu:
        job["gelu_table"] = rng.integers(-128, 128, 256)
    return job


def expected_rows(job, x):
    """The golden linear op of a job: requantized, then through the GELU table."""
    d_out, d_in = job["weight"].shape
    acc = linear(x[job["tokens"], :d_in], job["weight"], job["bias"])
    out = requantize(acc, job["mult"], job["shift"], job["zero_point"], job["bits"])
    return out if job["gelu_table"] is None else gelu_int(out, job["gelu_table"])


def job_image(config, name, job):
    """:func:`matrix_image` of a job dict (see :func:`random_job`)."""
    return matrix_image(config, name, job["weight"], job["bias"], mult=job["mult"],
                        shift=job["shift"], zero_point=job["zero_point"], bits=job["bits"],
                        gelu_table=job["gelu_table"])


def job_streams(config, jobs, x):
    """``(w beats, x beats, y beat count)`` for a sequence of job dicts over activations ``x``."""
    w_beats, x_beats, y_count = [], [], 0
    for n, job in enumerate(jobs):
        d_out, d_in = job["weight"].shape
        w_beats += job_image(config, f"job {n}", job)
        x_beats += token_beats(config, x[:, :d_in], job["tokens"], job["scores"])
        y_count += len(job["tokens"]) * -(-d_out // config.po)
    return w_beats, x_beats, y_count


def check_outputs(config, jobs, x, words):
    """Assert that ``y`` words hold every job's golden rows, and its scores, exactly once."""
    scores = {}
    outputs = assemble_outputs(config, words, [job["weight"].shape[0] for job in jobs], scores)
    for n, (out, job) in enumerate(zip(outputs, jobs)):
        if sorted(out) != sorted(job["tokens"]):
            raise AssertionError(f"job {n}: tokens {sorted(out)}, expected {sorted(job['tokens'])}")
        for row, (token, expected) in enumerate(zip(job["tokens"], expected_rows(job, x))):
            if not np.array_equal(out[token], expected):
                raise AssertionError(f"job {n} token {token}: got {out[token]}, expected {expected}")
            if scores[n, token] != job["scores"][row]:
                raise AssertionError(f"job {n} token {token}: score {scores[n, token]}, "
                                     f"expected {job['scores'][row]}")
