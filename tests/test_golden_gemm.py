import numpy as np
import pytest

from golden.gemm import ACC_MAX, K_MAX, int8_matmul


def test_matches_exact_integer_product():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (7, 33))
    b = rng.integers(-128, 128, (33, 5))
    expected = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(33)) for j in range(5)]
                for i in range(7)]
    out = int8_matmul(a, b)
    assert out.dtype == np.int32
    assert out.tolist() == expected


def test_k_max_is_the_int32_bound():
    assert K_MAX * 128 * 128 <= ACC_MAX < (K_MAX + 1) * 128 * 128
    out = int8_matmul(np.full((1, K_MAX), -128), np.full((K_MAX, 1), -128))
    assert int(out[0, 0]) == K_MAX * 16384


def test_empty_shapes():
    assert int8_matmul(np.zeros((0, 4), int), np.zeros((4, 3), int)).shape == (0, 3)
    assert not int8_matmul(np.zeros((2, 0), int), np.zeros((0, 3), int)).any()


@pytest.mark.parametrize("a, b, message", [
    (np.full((1, 2), 128), np.zeros((2, 1), int), r"a must hold int8 values in \[-128, 127\], found \[128, 128\]"),
    (np.zeros((1, 2), int), np.full((2, 1), -129), r"b must hold int8 values"),
    (np.zeros((1, 2), int), np.zeros((3, 1), int), r"inner dimensions differ"),
    (np.zeros((1, K_MAX + 1), np.int8), np.zeros((K_MAX + 1, 1), np.int8),
     rf"K must be in \[0, {K_MAX}\] for an int32 accumulator, got {K_MAX + 1}"),
])
def test_bad_operands_are_named(a, b, message):
    with pytest.raises(ValueError, match=message):
        int8_matmul(a, b)


def test_float_operands_rejected():
    with pytest.raises(TypeError, match="a must be an integer array"):
        int8_matmul(np.zeros((1, 1)), np.zeros((1, 1), int))
