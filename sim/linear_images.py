"""Host side of :class:`rtl.linear.LinearKernel`: matrix images, token beats, output assembly.

What a driver (or a testbench) sends on ``w`` and ``x`` and how it reads ``y``,
following the formats documented in :mod:`rtl.linear`.
"""

import numpy as np

from rtl.linear import HEADER, channel_layout, x_layout, y_layout

from .packing import pack, unpack

__all__ = ["matrix_image", "token_beats", "assemble_outputs"]


def _split(word, bits, bus_width):
    return [(word >> (i * bus_width)) & ((1 << bus_width) - 1)
            for i in range(-(-bits // bus_width))]


def matrix_image(config, name, weight, bias):
    """Bus beats (ints) of one matrix image for ``config``.

    Parameters
    ----------
    config : LinearConfig
    name : str
        Names the matrix in errors.
    weight : int array, shape (d_out, d_in), values in [-128, 127]
        torch layout ``[out, in]``.
    bias : int array, shape (d_out,), int32
    """
    weight, bias = np.asarray(weight, np.int64), np.asarray(bias, np.int64)
    d_out, d_in = weight.shape
    if bias.shape != (d_out,):
        raise ValueError(f"bias of {name} must have shape ({d_out},), not {bias.shape}")
    kb, nb = config.check_matrix(name, d_in, d_out)
    pi, po, bus = config.pi, config.po, config.bus_width
    padded = np.zeros((nb * po, kb * pi), np.int64)
    padded[:d_out, :d_in] = weight
    bias_p = np.zeros(nb * po, np.int64)
    bias_p[:d_out] = bias
    beats = [pack(HEADER, {"kb": kb, "nb": nb})]
    w_bits = config.weight_layout.size
    for j in range(nb):
        for s in range(kb):
            tile = padded[j * po:(j + 1) * po, s * pi:(s + 1) * pi]
            beats += _split(pack(config.weight_layout, tile), w_bits, bus)
    c_layout = channel_layout(po)
    for j in range(nb):
        word = pack(c_layout, {"bias": bias_p[j * po:(j + 1) * po]})
        beats += _split(word, c_layout.size, bus)
    return beats


def token_beats(config, x, tokens):
    """``x`` beats for the rows ``x[tokens]`` (the gather), ``last`` on the final beat.

    ``x`` is the whole int8 activation matrix (tokens x d_in).
    """
    x = np.asarray(x, np.int64)
    kb = -(-x.shape[1] // config.pi)
    padded = np.zeros((x.shape[0], kb * config.pi), np.int64)
    padded[:, :x.shape[1]] = x
    layout = x_layout(config.pi)
    beats = []
    for n, token in enumerate(tokens):
        for s in range(kb):
            beats.append(pack(layout, {
                "data": padded[token, s * config.pi:(s + 1) * config.pi],
                "token": int(token),
                "last": int(n == len(tokens) - 1 and s == kb - 1),
            }))
    return beats


def assemble_outputs(config, words, d_outs):
    """Per batch, ``{token: output row}`` from ``y`` words (batches end at ``last``).

    ``d_outs`` lists the output width of each batch's matrix. Checks that every
    fold of a token arrives exactly once and that the batch count matches.
    """
    layout = y_layout(config.po)
    batches, rows = [], {}
    for word in words:
        beat = unpack(layout, word)
        row = rows.setdefault(beat["token"], {})
        if beat["fold"] in row:
            raise AssertionError(f"batch {len(batches)}: token {beat['token']} "
                                 f"fold {beat['fold']} arrived twice")
        row[beat["fold"]] = beat["data"]
        if beat["last"]:
            batches.append(rows)
            rows = {}
    if rows or len(batches) != len(d_outs):
        raise AssertionError(f"expected {len(d_outs)} batches ending in last, got "
                             f"{len(batches)} and {len(rows)} unterminated rows")
    return [{token: np.concatenate([folds[j] for j in sorted(folds)])[:d_out]
             for token, folds in batch.items()} for batch, d_out in zip(batches, d_outs)]
