import math

import numpy as np
import pytest

from golden.metrics import (compare_traces, cosine_similarity, max_abs_error, routing_agreement,
                            sqnr_db)


def test_sqnr_known_values():
    ref = np.ones(1000)
    noise = np.where(np.arange(1000) % 2, 0.1, -0.1)       # noise power 0.01, signal power 1
    assert sqnr_db(ref, ref + noise) == pytest.approx(20.0)
    assert sqnr_db(2 * ref, 2 * ref + noise) == pytest.approx(20 + 20 * math.log10(2))
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert sqnr_db(np.arange(4, dtype=np.int8), np.arange(4)) == math.inf


def test_max_abs_error_and_cosine():
    ref = np.ones(1000)
    assert max_abs_error(ref, ref + np.where(np.arange(1000) % 2, 0.1, -0.3)) == pytest.approx(0.3)
    assert max_abs_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    assert cosine_similarity([1, 0], [0, 3]) == 0.0
    assert cosine_similarity([[1, 2], [3, 4]], [[2, 4], [6, 8]]) == pytest.approx(1.0)
    assert cosine_similarity([1, 2], [-1, -2]) == pytest.approx(-1.0)
    assert cosine_similarity([0, 0], [0, 0]) == 1.0 and cosine_similarity([0, 0], [1, 0]) == 0.0


@pytest.mark.parametrize("metric", [max_abs_error, sqnr_db, cosine_similarity])
def test_shape_mismatch_is_named(metric):
    with pytest.raises(ValueError, match=r"shapes differ: reference \(2, 3\), test \(3, 2\)"):
        metric(np.zeros((2, 3)), np.zeros((3, 2)))


def test_routing_agreement_ignores_order():
    ref = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    test = np.array([[1, 0], [2, 3], [4, 6], [7, 6]])       # row 0 permuted, row 2 differs
    assert routing_agreement(ref, test) == 0.75
    assert routing_agreement(ref, ref[::-1]) == 0.0
    assert routing_agreement(np.zeros((0, 2), int), np.zeros((0, 2), int)) == 1.0
    with pytest.raises(ValueError, match=r"expert index shapes differ or are not \(tokens, k\): "
                                         r"\(4, 2\), \(4, 1\)"):
        routing_agreement(ref, ref[:, :1])
    with pytest.raises(ValueError, match=r"expert index shapes differ or are not \(tokens, k\): "
                                         r"\(8,\), \(8,\)"):
        routing_agreement(ref.ravel(), ref.ravel())


def test_compare_traces():
    ref = {"a": np.ones(4), "b.topk_idx": np.array([[0, 1], [2, 3]]), "c": np.ones((2, 2)),
           "only_ref": np.zeros(1)}
    test = {"a": np.ones(4) * 1.1, "b.topk_idx": np.array([[1, 0], [2, 4]]), "c": np.ones((2, 2)),
            "only_test": np.zeros(1)}
    rows = compare_traces(ref, test)
    assert [r["name"] for r in rows] == ["a", "b.topk_idx", "c"]
    assert rows[0]["shape"] == [4] and rows[0]["sqnr_db"] == pytest.approx(20.0)
    assert rows[0]["max_abs_error"] == pytest.approx(0.1)
    assert rows[0]["cosine"] == pytest.approx(1.0)
    assert rows[1] == {"name": "b.topk_idx", "shape": [2, 2], "routing_agreement": 0.5}
    assert rows[2]["sqnr_db"] == math.inf and rows[2]["max_abs_error"] == 0.0
    chosen = compare_traces(ref, test, names=["c", "a", "only_ref"])
    assert [r["name"] for r in chosen] == ["c", "a"]
    assert compare_traces(ref, test, names=[]) == []


def test_compare_traces_names_the_mismatch():
    with pytest.raises(ValueError, match=r"^trace 'x.out': shapes differ: "
                                         r"reference \(4,\), test \(3,\)$"):
        compare_traces({"x.out": np.ones(4)}, {"x.out": np.ones(3)})
    with pytest.raises(ValueError, match=r"^trace 'x.topk_idx': expert index shapes differ"):
        compare_traces({"x.topk_idx": np.zeros((3, 2))}, {"x.topk_idx": np.zeros((3, 1))})
