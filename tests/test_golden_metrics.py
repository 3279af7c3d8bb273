import math

import numpy as np
import pytest

from golden.metrics import (compare_traces, cosine_similarity, max_abs_error, routing_agreement,
                            sqnr_db)


def test_known_values():
    ref = np.ones(1000)
    noise = np.where(np.arange(1000) % 2, 0.1, -0.1)       # noise power 0.01
    assert sqnr_db(ref, ref + noise) == pytest.approx(20.0)
    assert sqnr_db(ref, ref) == math.inf
    assert max_abs_error(ref, ref + noise) == pytest.approx(0.1)
    assert cosine_similarity([1, 0], [0, 3]) == 0.0
    assert cosine_similarity([1, 2], [2, 4]) == pytest.approx(1.0)


def test_routing_agreement_ignores_order():
    ref = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    test = np.array([[1, 0], [2, 3], [4, 6], [7, 6]])
    assert routing_agreement(ref, test) == 0.75
    with pytest.raises(ValueError, match="expert index shapes differ"):
        routing_agreement(ref, ref[:, :1])


def test_compare_traces():
    ref = {"a": np.ones(4), "b.topk_idx": np.array([[0, 1]]), "only_ref": np.zeros(1)}
    test = {"a": np.ones(4) * 1.1, "b.topk_idx": np.array([[1, 0]])}
    rows = compare_traces(ref, test)
    assert [r["name"] for r in rows] == ["a", "b.topk_idx"]
    assert rows[0]["sqnr_db"] == pytest.approx(20.0) and rows[1]["routing_agreement"] == 1.0
    with pytest.raises(ValueError, match=r"shapes differ: reference \(4,\), test \(3,\)"):
        compare_traces({"a": np.ones(4)}, {"a": np.ones(3)})
