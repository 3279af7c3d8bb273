"""The memory formats: matrix and LayerNorm images decode to what was encoded; striping."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moevit.images import (beats_to_bytes, bytes_to_beats, decode_matrix_image, decode_norm_image,
                           matrix_image, norm_image, stripe, tensor_bytes, tensor_from_bytes,
                           unstripe)
from moevit.packing import pack, pack_rows, unpack, unpack_rows
from rtl.compute.layernorm import param_layout
from rtl.compute.linear import LinearConfig, channel_layout, image_beats
from rtl.config import AxiPorts


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.sampled_from([64, 128, 512]),
       st.sampled_from([8, 16]), st.booleans(), st.integers(0, 2**32 - 1))
def test_matrix_image_round_trip(pi, po, t, bus, bits, gelu, seed):
    config = LinearConfig(pi=pi, po=po, t=t, max_in=20, max_out=20, bus_width=bus)
    rng = np.random.default_rng(seed)
    d_in, d_out = int(rng.integers(1, 21)), int(rng.integers(1, 21))
    weight = rng.integers(-128, 128, (d_out, d_in))
    bias = rng.integers(-(1 << 30), 1 << 30, d_out)
    mult, shift = rng.integers(0, 1 << 15, d_out), rng.integers(0, 48, d_out)
    zp = int(rng.integers(-128, 128)) if bits == 8 else int(rng.integers(-1000, 1000))
    gelu = gelu and bits == 8
    table = rng.integers(-128, 128, 256) if gelu else None
    beats = matrix_image(config, "m", weight, bias, mult=mult, shift=shift, zero_point=zp,
                         bits=bits, gelu_table=table)
    kb, nb = -(-d_in // pi), -(-d_out // po)
    assert len(beats) == image_beats(config, kb, nb, gelu)
    img = decode_matrix_image(config, beats + [0, 0])           # trailing bus padding ignored
    assert (img["kb"], img["nb"], img["zero_point"], img["bits"], img["beats"]) == \
        (kb, nb, zp, bits, len(beats))
    assert np.array_equal(img["weight"][:d_out, :d_in], weight)
    assert not img["weight"][d_out:].any() and not img["weight"][:, d_in:].any()
    for name, value in (("bias", bias), ("mult", mult), ("shift", shift)):
        assert np.array_equal(img[name][:d_out], value) and not img[name][d_out:].any()
    assert (img["gelu_table"] is None) == (not gelu)
    if gelu:
        assert np.array_equal(img["gelu_table"], table)


def test_truncated_or_oversized_images_are_named():
    config = LinearConfig(pi=4, po=4, t=1, max_in=8, max_out=8, bus_width=64)
    beats = matrix_image(config, "m", np.ones((8, 8), int), np.zeros(8, int), bits=16)
    with pytest.raises(ValueError, match=r"img: 5 beats, the header needs \d+"):
        decode_matrix_image(config, beats[:5], "img")
    small = LinearConfig(pi=4, po=4, t=1, max_in=4, max_out=8, bus_width=64)
    with pytest.raises(ValueError, match=r"img: header folds kb=2, nb=2 do not fit the kernel"):
        decode_matrix_image(small, beats, "img")


@pytest.mark.parametrize("lanes, bus, d", [(1, 64, 6), (4, 64, 192), (16, 512, 48), (2, 256, 8)])
def test_norm_image_round_trip(lanes, bus, d):
    rng = np.random.default_rng(d)
    gain, bias = rng.integers(-(1 << 15), 1 << 15, d), rng.integers(-(1 << 31), 1 << 31, d)
    beats = norm_image(lanes, bus, "ln", gain, bias, 46, 1 << 40)
    assert len(beats) == d // lanes * -(-param_layout(lanes).size // bus)
    p = decode_norm_image(lanes, bus, d, beats)
    assert np.array_equal(p["gain"], gain) and np.array_equal(p["bias"], bias)
    assert (p["shift"], p["eps"], p["beats"]) == (46, 1 << 40, len(beats))
    with pytest.raises(ValueError, match=r"eps of ln must be in \[1, 1099511627776\]"):
        norm_image(lanes, bus, "ln", gain, bias, 3, 0)


@pytest.mark.parametrize("ports, bits, n", [(1, 256, 100), (4, 128, 64 * 3 + 5), (2, 64, 1),
                                           (8, 64, 5000)])
def test_stripe_puts_bus_word_p_of_every_load_path_word_in_sub_region_p(ports, bits, n):
    axi = AxiPorts(data_bits=bits, ports=ports)
    raw = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
    striped = stripe(raw, axi)
    port, word = bits // 8, ports * bits // 8
    words = -(-n // word)
    assert len(striped) == axi.footprint(words)
    sub = axi.sub_region(words)
    assert sub % 4096 == 0 if ports > 1 else sub == words * port
    padded = raw + bytes(words * word - n)
    for p in range(ports):
        for w in range(words):
            got = striped[p * sub + w * port:p * sub + (w + 1) * port]
            assert got == padded[w * word + p * port:w * word + (p + 1) * port]
        assert not any(striped[p * sub + words * port:(p + 1) * sub])
    assert unstripe(striped, axi, words) == padded


def test_tensors_and_beats_round_trip():
    x = np.array([[-32768, 0, 32767], [1, -1, 2]])
    assert np.array_equal(tensor_from_bytes(tensor_bytes(x, "int16") + b"\0", "int16", 2, 3), x)
    with pytest.raises(ValueError, match=r"tensor values must be in \[-128, 127\] for int8"):
        tensor_bytes(x, "int8")
    beats = [1, 2**63 + 5, 0]
    assert bytes_to_beats(beats_to_bytes(beats, 64), 64) == beats
    with pytest.raises(ValueError, match=r"9 bytes are not a whole number of 64-bit beats"):
        bytes_to_beats(bytes(9), 64)


def test_bulk_packing_equals_word_by_word():
    layout = channel_layout(5)
    rng = np.random.default_rng(1)
    values = {"bias": rng.integers(-(1 << 31), 1 << 31, (7, 5)),
              "mult": rng.integers(0, 1 << 15, (7, 5)), "shift": rng.integers(0, 64, (7, 5))}
    words = pack_rows(layout, values)
    assert words == [pack(layout, {k: v[n] for k, v in values.items()}) for n in range(7)]
    back = unpack_rows(layout, words)
    assert all(np.array_equal(back[k], values[k]) for k in values)
    assert unpack(layout, words[3])["mult"].tolist() == values["mult"][3].tolist()
    # Scalars broadcast over the words.
    norm = pack_rows(param_layout(2), {"gain": [[1, 2], [3, 4]], "bias": [[5, 6], [7, 8]],
                                       "shift": 9, "eps": 10})
    assert unpack_rows(param_layout(2), norm)["eps"].tolist() == [10, 10]
    with pytest.raises(ValueError, match=r"field gain: expected 2 elements per word, got 3"):
        pack_rows(param_layout(2), {"gain": [[1, 2, 3]], "bias": [[5, 6]], "shift": 0, "eps": 1})
