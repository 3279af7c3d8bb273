"""Host side of :class:`rtl.linear.LinearKernel`: matrix images, token beats, output assembly.

What a driver (or a testbench) sends on ``w`` and ``x`` and how it reads ``y``,
following the formats documented in :mod:`rtl.linear`.
"""

import numpy as np

from golden.gelu import gelu_int
from golden.quant import BIAS_MAX, MULT_MAX, SHIFT_MAX, dyadic, linear, requantize
from rtl.linear import GELU_ENTRIES, HEADER, OutMode, channel_layout, x_layout, y_layout

from .packing import pack, unpack

__all__ = ["matrix_image", "token_beats", "assemble_outputs", "random_job", "job_image",
           "expected_rows", "job_streams", "check_outputs"]


def _split(word, bits, bus_width):
    return [(word >> (i * bus_width)) & ((1 << bus_width) - 1)
            for i in range(-(-bits // bus_width))]


def _checked(name, what, values, lo, hi, shape):
    values = np.broadcast_to(np.asarray(values, np.int64), shape)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{what} of {name} must be in [{lo}, {hi}], "
                         f"found [{int(values.min())}, {int(values.max())}]")
    return values


def matrix_image(config, name, weight, bias, *, mult=1, shift=0, zero_point=0, bits=None,
                 gelu_table=None):
    """Bus beats (ints) of one matrix image for ``config``.

    The kernel computes, per output channel ``c``,
    ``golden.quant.requantize(x @ weight.T + bias, mult[c], shift[c], zero_point, bits)``
    and, given a table, ``golden.gelu.gelu_int`` of that (``bits`` must then be 8).

    Parameters
    ----------
    config : LinearConfig
    name : str
        Names the matrix in errors.
    weight : int array, shape (d_out, d_in), values in [-128, 127]
        torch layout ``[out, in]``.
    bias : int array, shape (d_out,)
        int32, within ``golden.quant.BIAS_MAX``.
    mult, shift : int or int array of shape (d_out,)
        Requantizer per output channel (``golden.quant.dyadic``); the default passes
        ``acc + bias`` through unchanged.
    zero_point : int
        Added after rounding, within the output range.
    bits : 8, 16 or 32, optional
        Output width (saturation range); at most (and by default) ``config.out_width``.
    gelu_table : int array of shape (256,), optional
        ``golden.gelu.gelu_table``; needs ``config.gelu`` and ``bits == 8``.
    """
    weight, bias = np.asarray(weight, np.int64), np.asarray(bias, np.int64)
    d_out, d_in = weight.shape
    if bias.shape != (d_out,):
        raise ValueError(f"bias of {name} must have shape ({d_out},), not {bias.shape}")
    kb, nb = config.check_matrix(name, d_in, d_out)
    _checked(name, "weight", weight, -128, 127, weight.shape)
    _checked(name, "bias", bias, -BIAS_MAX, BIAS_MAX, bias.shape)
    bits = config.out_width if bits is None else bits
    if bits not in (8, 16, 32) or bits > config.out_width:
        raise ValueError(f"bits of {name} must be 8, 16 or 32 and at most the kernel's "
                         f"out_width {config.out_width}, not {bits}")
    mult = _checked(name, "mult", mult, 0, MULT_MAX, (d_out,))
    shift = _checked(name, "shift", shift, 0, SHIFT_MAX, (d_out,))
    _checked(name, "zero_point", zero_point, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, ())
    if bits == 32:
        _checked(name, "zero_point", zero_point, -(1 << 15), (1 << 15) - 1, ())
    if gelu_table is not None:
        if not config.gelu or bits != 8:
            raise ValueError(f"gelu_table of {name} needs a kernel built with gelu=True and "
                             f"bits=8, not gelu={config.gelu} and bits={bits}")
        if np.shape(gelu_table) != (GELU_ENTRIES,):
            raise ValueError(f"gelu_table of {name} must have {GELU_ENTRIES} entries, "
                             f"not shape {np.shape(gelu_table)}")
        gelu_table = _checked(name, "gelu_table", gelu_table, -128, 127, (GELU_ENTRIES,))
    pi, po, bus = config.pi, config.po, config.bus_width
    padded = np.zeros((nb * po, kb * pi), np.int64)
    padded[:d_out, :d_in] = weight
    channels = np.zeros((3, nb * po), np.int64)
    channels[:, :d_out] = bias, mult, shift
    beats = [pack(HEADER, {"kb": kb, "nb": nb, "zero_point": int(zero_point),
                           "mode": {8: OutMode.INT8, 16: OutMode.INT16, 32: OutMode.INT32}[bits].value,
                           "gelu": int(gelu_table is not None)})]
    w_bits = config.weight_layout.size
    for j in range(nb):
        for s in range(kb):
            tile = padded[j * po:(j + 1) * po, s * pi:(s + 1) * pi]
            beats += _split(pack(config.weight_layout, tile), w_bits, bus)
    c_layout = channel_layout(po)
    for j in range(nb):
        fold = channels[:, j * po:(j + 1) * po]
        word = pack(c_layout, {"bias": fold[0], "mult": fold[1], "shift": fold[2]})
        beats += _split(word, c_layout.size, bus)
    if gelu_table is not None:
        per = config.entries_per_beat
        beats += [pack(config.table_layout, gelu_table[i:i + per]) for i in range(0, GELU_ENTRIES, per)]
    return beats


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
