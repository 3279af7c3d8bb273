import math

import numpy as np
import pytest

from golden.softmax import (CODE_ZERO, EXP2_TABLE, LOG2_FRAC, MANT_CODE_ZERO, MANT_TABLE,
                            SQRT2_Q15, attention_from_scores, attention_pv, attention_pv_mant4,
                            attention_pv_sqrt2, exp2_neg, log2_codes, mant4_codes,
                            normalized_reciprocal, softmax_u8, sqrt2_codes)

STEP = 1 << LOG2_FRAC


def test_exp2_exhaustive_over_the_int16_domain():
    d = np.arange(0, 1 << 16)
    e = exp2_neg(d)
    exact = 2.0 ** (15 - d / STEP)
    assert np.abs(e - exact).max() < 1.0          # below one Q1.15 LSB everywhere
    assert e[0] == 1 << 15 and not e[16 * STEP:].any()
    assert (np.diff(e) <= 0).all()                # monotonic


def test_exp2_table_is_the_rounded_function():
    f = np.arange(STEP)
    assert (np.abs(EXP2_TABLE - 2.0 ** (15 - f / STEP)) <= 0.5).all()


def test_normalized_reciprocal_range_and_exactness():
    den = np.concatenate([np.arange(1, 5000), np.array([2**20 - 1, 2**20, 2**39 + 12345])])
    rec, k = normalized_reciprocal(den)
    assert ((rec >= 1 << 15) & (rec <= 1 << 16)).all()
    assert all(int(r) == (1 << (int(kk) + 15)) // int(dd) and (1 << (int(kk) - 1)) <= dd < (1 << int(kk))
               for r, kk, dd in zip(rec, k, den))
    with pytest.raises(ValueError, match=r"den must be in \[1, 2\*\*40\)"):
        normalized_reciprocal(np.array([0]))


def _float_softmax(u):
    x = u / STEP * math.log(2)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("experts", [1, 2, 16, 64])
def test_softmax_u8_within_one_lsb_of_float(experts):
    rng = np.random.default_rng(experts)
    u = rng.integers(-32768, 32768, (500, experts))
    u[:50] = rng.integers(-300, 300, (50, experts))        # realistic spreads
    p = softmax_u8(u)
    assert p.dtype == np.uint8
    ref = _float_softmax(u) * 256
    assert np.abs(p - np.minimum(ref, 255)).max() <= 1.0


def test_softmax_u8_all_equal_and_saturation():
    assert softmax_u8(np.zeros((1, 16), int)).tolist() == [[16] * 16]
    assert softmax_u8(np.array([[5000, -5000]])).tolist() == [[255, 0]]


def test_log2_codes_exhaustive_distances():
    d = np.arange(0, 40 * STEP)
    u = np.stack([np.zeros_like(d), -d], axis=1)           # row max is 0, the other score is -d
    codes = log2_codes(u)
    assert (codes[:, 0] == 0).all()
    expected = np.minimum(np.floor(d / STEP + 0.5), CODE_ZERO)
    assert (codes[:, 1] == expected).all()


def test_attention_pv_against_float_definition():
    rng = np.random.default_rng(5)
    u = rng.integers(-800, 800, (3, 17, 29))
    v = rng.integers(-128, 128, (3, 29, 8))
    codes = log2_codes(u)
    out = attention_pv(codes, v)
    w = np.where(codes < CODE_ZERO, 2.0 ** -codes.astype(float), 0.0)
    ref = (w @ v) / w.sum(-1, keepdims=True)
    assert out.dtype == np.int8
    # One normalised reciprocal (relative error < 2**-15) and one rounding.
    assert np.abs(out - ref).max() <= 0.5 + 127 * 2.0**-15
    # And against the real softmax: the log2 codes cost at most a factor sqrt(2) per weight.
    probs = _float_softmax(u)
    assert np.corrcoef((probs @ v).ravel(), out.ravel())[0, 1] > 0.95


def test_attention_pv_edges():
    # One key: the output is that value exactly, for every int8 value.
    v = np.arange(-128, 128).reshape(1, 1, 256)
    assert (attention_pv(np.zeros((1, 1, 1), int), v) == v).all()
    # Uniform weights average the values (rounding half up).
    assert attention_pv(np.zeros((1, 2), int), np.array([[1], [2]])).tolist() == [[2]]
    assert attention_pv(np.zeros((1, 2), int), np.array([[-1], [-2]])).tolist() == [[-1]]
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]"):
        attention_pv(np.full((1, 1), 16), np.zeros((1, 1), int))
    with pytest.raises(ValueError, match=r"codes have 2 keys but v has 3 rows"):
        attention_pv(np.zeros((1, 2), int), np.zeros((3, 1), int))


def test_bad_scores_are_named():
    with pytest.raises(ValueError, match=r"u must hold int16 values"):
        softmax_u8(np.array([[40000]]))
    with pytest.raises(ValueError, match=r"u must have at least one score per row"):
        log2_codes(np.zeros((2, 0), int))


def test_sqrt2_codes_exhaustive_distances():
    d = np.arange(0, 20 * STEP)
    codes = sqrt2_codes(np.stack([np.zeros_like(d), -d], axis=1))
    assert (codes[:, 0] == 0).all()
    # Half-octave steps, halves to the smaller weight, 15 = zero beyond 2**-7.25.
    assert (codes[:, 1] == np.minimum(np.floor(2 * d / STEP + 0.5), CODE_ZERO)).all()


def test_attention_pv_sqrt2_against_float_definition():
    assert SQRT2_Q15 == math.floor(math.sqrt(2) * 2**15 + 0.5)
    rng = np.random.default_rng(6)
    u = rng.integers(-300, 300, (3, 17, 29))
    v = rng.integers(-128, 128, (3, 29, 8))
    codes = sqrt2_codes(u)
    assert set(np.unique(codes)) >= {0, 1, 2, 3, CODE_ZERO}       # odd, even and zero codes
    out = attention_pv_sqrt2(codes, v)
    w = np.where(codes < CODE_ZERO, 2.0 ** (-codes.astype(float) / 2), 0.0)
    ref = (w @ v) / w.sum(-1, keepdims=True)
    assert out.dtype == np.int8
    # sqrt(2) in Q1.15 and one normalised reciprocal (relative errors ~2**-15), one rounding.
    assert np.abs(out - ref).max() <= 0.5 + 127 * 2.0**-13
    # Half-octave codes track the real softmax closer than the octave codes.
    probs = _float_softmax(u)
    err2 = np.abs(probs @ v - attention_pv(log2_codes(u), v)).mean()
    err_sqrt2 = np.abs(probs @ v - out).mean()
    assert err_sqrt2 < err2


def test_attention_pv_sqrt2_edges():
    v = np.arange(-128, 128).reshape(1, 1, 256)
    for code in range(CODE_ZERO):          # a single key of any non-zero weight: that value
        assert (attention_pv_sqrt2(np.full((1, 1, 1), code), v) == v).all()
    # An odd and an even code with equal values give that value; weights 1 and 1/sqrt(2).
    assert attention_pv_sqrt2(np.array([[0, 1]]), np.array([[100], [100]])).tolist() == [[100]]
    expected = math.floor((127 + (-128) / math.sqrt(2)) / (1 + 1 / math.sqrt(2)) + 0.5)
    assert attention_pv_sqrt2(np.array([[0, 1]]), np.array([[127], [-128]])).tolist() == [[expected]]
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]"):
        attention_pv_sqrt2(np.full((1, 1), 16), np.zeros((1, 1), int))


def test_attention_from_scores_picks_the_codes():
    u = np.array([[0, -32, -64, -96, -128]])          # half an octave apart
    v = np.arange(5).reshape(5, 1) * 20
    c2, out2 = attention_from_scores(u, v)
    cs, outs = attention_from_scores(u, v, "sqrt2")
    cm, outm = attention_from_scores(u, v, "mant4")
    assert c2.tolist() == [[0, 1, 1, 2, 2]] and cs.tolist() == [[0, 1, 2, 3, 4]]
    assert cm.tolist() == [[0, 32, 64, 96, 128]]
    assert out2.tolist() == attention_pv(c2, v).tolist()
    assert outs.tolist() == attention_pv_sqrt2(cs, v).tolist()
    assert outm.tolist() == attention_pv_mant4(cm, v).tolist()
    with pytest.raises(ValueError, match=r"codes must be one of log2, sqrt2, mant4, got 'log3'"):
        attention_from_scores(u, v, "log3")


def test_mant4_codes_and_table():
    d = np.arange(0, 20 * STEP)
    codes = mant4_codes(np.stack([np.zeros_like(d), -d], axis=1))
    assert (codes[:, 0] == 0).all() and (codes[:, 1] == np.minimum(d, MANT_CODE_ZERO)).all()
    # The mantissas: 2**4 * 2**(-f/64) rounded half up, 16 down to 8, within half an LSB.
    exact = 2.0 ** (4 - np.arange(STEP) / STEP)
    assert np.abs(MANT_TABLE - exact).max() <= 0.5 and MANT_TABLE[0] == 16 and MANT_TABLE[-1] == 8


def test_attention_pv_mant4_against_float_definition():
    rng = np.random.default_rng(7)
    u = rng.integers(-1200, 1200, (3, 17, 29))
    v = rng.integers(-128, 128, (3, 29, 8))
    codes = mant4_codes(u)
    assert (codes == MANT_CODE_ZERO).any() and (codes == 0).any()
    out = attention_pv_mant4(codes, v)
    c = codes.astype(np.int64)
    w = np.where(c < MANT_CODE_ZERO, MANT_TABLE[c % STEP] * 2.0 ** -(c // STEP), 0.0)
    ref = (w @ v) / w.sum(-1, keepdims=True)
    assert out.dtype == np.int8
    assert np.abs(out - ref).max() <= 0.5 + 127 * 2.0**-15
    # The mantissa codes track the real softmax closer than both 4-bit forms.
    probs = _float_softmax(u)
    err = {name: np.abs(probs @ v - pv(to_codes(u), v)).mean() for name, to_codes, pv in (
        ("log2", log2_codes, attention_pv), ("sqrt2", sqrt2_codes, attention_pv_sqrt2),
        ("mant4", mant4_codes, attention_pv_mant4))}
    assert err["mant4"] < err["sqrt2"] < err["log2"]


def test_attention_pv_mant4_edges():
    v = np.arange(-128, 128).reshape(1, 1, 256)
    for code in (0, 1, 63, 64, 500, MANT_CODE_ZERO - 1):   # one key of any weight: that value
        assert (attention_pv_mant4(np.full((1, 1, 1), code), v) == v).all()
    # Weights 16 and 8 (code 64: one octave down): (2 * 127 + 1 * -128) / 3, rounded.
    assert attention_pv_mant4(np.array([[0, 64]]), np.array([[127], [-128]])).tolist() == [[42]]
    assert attention_pv_mant4(np.array([[0, MANT_CODE_ZERO]]), np.array([[5], [-128]])).tolist() == [[5]]
    with pytest.raises(ValueError, match=r"codes must be in \[0, 960\]"):
        attention_pv_mant4(np.full((1, 1), MANT_CODE_ZERO + 1), np.zeros((1, 1), int))
