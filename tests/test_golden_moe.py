import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from golden.moe import TOPK_MAX, combine, dispatch, topk
from golden.softmax import softmax_u8


def _reference_topk(row, k):
    # Insertion sort with a strict ">", as the reference hardware: ties keep the lower id.
    chosen = []
    for e, value in enumerate(row):
        pos = len(chosen)
        while pos > 0 and value > row[chosen[pos - 1]]:
            pos -= 1
        chosen.insert(pos, e)
        del chosen[k:]
    return chosen


@given(u=arrays(np.int64, st.tuples(st.integers(1, 8), st.integers(4, 20)),
                elements=st.integers(-3, 3)),
       k=st.integers(1, TOPK_MAX))
def test_topk_matches_insertion_sort_with_ties(u, k):
    idx = topk(u, k)
    assert idx.tolist() == [_reference_topk(list(row), k) for row in u]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_all_equal_logits_pick_the_lowest_ids(k):
    assert topk(np.zeros((3, 16), int), k).tolist() == [list(range(k))] * 3


def test_topk_bad_k_is_named():
    with pytest.raises(ValueError, match=r"k must be in \[1, min\(E=3, 4\)\], got 4"):
        topk(np.zeros((1, 3), int), 4)
    with pytest.raises(ValueError, match=r"k must be in \[1, min\(E=16, 4\)\], got 0"):
        topk(np.zeros((1, 16), int), 0)


def test_dispatch_queues_and_active_list():
    rng = np.random.default_rng(0)
    u = rng.integers(-500, 500, (129, 16))
    u[:, 7] = -30000                                      # expert 7 never chosen
    u[:40, 3] = 30000                                     # expert 3 gets the first 40 tokens
    idx = topk(u, 2)
    probs = softmax_u8(u)
    routes = dispatch(idx, probs, 16)
    assert 7 not in routes.active and routes.lengths[7] == 0
    assert routes.tokens[3][:40].tolist() == list(range(40))
    assert sum(routes.lengths) == 129 * 2
    assert list(routes.active) == sorted(routes.active)
    for e in routes.active:
        assert (np.diff(routes.tokens[e]) > 0).all()
        assert (routes.scores[e] == probs[routes.tokens[e], e]).all()


def test_all_tokens_to_one_expert():
    u = np.zeros((10, 4), int)
    u[:, 2] = 1000
    routes = dispatch(topk(u, 1), softmax_u8(u), 4)
    assert routes.active == (2,) and routes.lengths == (0, 0, 10, 0)


def test_combine_is_the_rounded_weighted_sum():
    rng = np.random.default_rng(1)
    n, dim = 33, 8
    u = rng.integers(-300, 300, (n, 6))
    idx = topk(u, 2)
    probs = softmax_u8(u)
    routes = dispatch(idx, probs, 6)
    outputs = {e: rng.integers(-32768, 32768, (len(routes.tokens[e]), dim)) for e in routes.active}
    out = combine(routes, outputs, n, dim)
    expected = np.zeros((n, dim), object)
    for e in routes.active:
        for row, (t, p) in enumerate(zip(routes.tokens[e], routes.scores[e])):
            expected[t] += int(p) * outputs[e][row].astype(object)
    expected = np.vectorize(lambda a: max(-32768, min(32767, (a + 128) >> 8)))(expected)
    assert out.dtype == np.int16 and (out == expected).all()


def test_combine_saturates_and_checks_shapes():
    routes = dispatch(np.array([[0, 1]]), np.array([[255, 255]], np.uint8), 2)
    big = {0: np.full((1, 2), 32767), 1: np.full((1, 2), 32767)}
    assert combine(routes, big, 1, 2).tolist() == [[32767, 32767]]
    with pytest.raises(ValueError, match=r"expert 0 output has shape \(1, 3\), expected \(1, 2\)"):
        combine(routes, {0: np.zeros((1, 3), int), 1: np.zeros((1, 2), int)}, 1, 2)
