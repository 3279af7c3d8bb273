"""Tile a matrix multiply into systolic-array beats, and reassemble the result rows.

The host-side schedule of :class:`rtl.compute.systolic.SystolicArray`: output tiles in
row-major order (tile row ``i`` over M, tile column ``j`` over N), each tile
``ceil(K / k_lanes)`` beats of one K slice, zero-padded at the M, N and K edges.
Result rows come back in the same order, ``rows`` per tile.
"""

import numpy as np

from moevit.packing import pack, unpack
from rtl.compute.systolic import operand_layout, result_layout

__all__ = ["gemm_beats", "assemble_rows", "gemm_words", "gemm_result"]


def _tiles(m, n, rows, cols):
    return [(i, j) for i in range(0, m, rows) for j in range(0, n, cols)]


def gemm_beats(a, b, rows, cols, k_lanes=1):
    """Beats (dicts matching ``operand_layout``) that compute ``a @ b`` tile by tile."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    m, k = a.shape
    n = b.shape[1]
    kb = max(1, -(-k // k_lanes))
    a_pad = np.zeros((-(-m // rows) * rows, kb * k_lanes), np.int64)
    b_pad = np.zeros((kb * k_lanes, -(-n // cols) * cols), np.int64)
    a_pad[:m, :k] = a
    b_pad[:k, :n] = b
    beats = []
    for i, j in _tiles(m, n, rows, cols):
        for s in range(kb):
            ks = slice(s * k_lanes, (s + 1) * k_lanes)
            beats.append({"a": a_pad[i:i + rows, ks], "b": b_pad[ks, j:j + cols].T,
                          "last": int(s == kb - 1)})
    return beats


def assemble_rows(result_rows, m, n, rows, cols):
    """Rebuild the ``m x n`` int64 result from result-row dicts (``acc``, ``last``) in order.

    Checks the framing: exactly ``rows`` rows per tile, ``last`` on the final one.
    """
    tiles = _tiles(m, n, rows, cols)
    if len(result_rows) != rows * len(tiles):
        raise AssertionError(f"expected {rows * len(tiles)} result rows, got {len(result_rows)}")
    out = np.zeros((-(-m // rows) * rows, -(-n // cols) * cols), np.int64)
    for t, (i, j) in enumerate(tiles):
        for r in range(rows):
            row = result_rows[t * rows + r]
            if row["last"] != int(r == rows - 1):
                raise AssertionError(f"tile {t} row {r}: last={row['last']}")
            out[i + r, j:j + cols] = row["acc"]
    return out[:m, :n]


def gemm_words(a, b, rows, cols, k_lanes=1, operand_width=8):
    """Packed input words for ``a @ b`` and the number of result rows to expect."""
    layout = operand_layout(rows, cols, k_lanes, operand_width)
    words = [pack(layout, beat) for beat in gemm_beats(a, b, rows, cols, k_lanes)]
    m, n = np.shape(a)[0], np.shape(b)[1]
    return words, rows * -(-m // rows) * -(-n // cols)


def gemm_result(words, m, n, rows, cols):
    """The ``m x n`` result from packed result-row words."""
    layout = result_layout(cols)
    return assemble_rows([unpack(layout, w) for w in words], m, n, rows, cols)
