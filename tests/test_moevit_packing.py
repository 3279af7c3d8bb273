import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from moevit.packing import pack, unpack

LAYOUT = data.StructLayout({
    "flag": 1,
    "m": data.ArrayLayout(data.ArrayLayout(signed(5), 3), 2),
    "u": unsigned(7),
    "s": signed(9),
})


def _nested(v):
    return [[int(x) for x in row] for row in v]


def test_pack_agrees_with_layout_const_and_round_trips():
    rng = np.random.default_rng(3)
    for _ in range(200):
        value = {"flag": int(rng.integers(2)), "m": rng.integers(-16, 16, (2, 3)),
                 "u": int(rng.integers(128)), "s": int(rng.integers(-256, 256))}
        word = pack(LAYOUT, value)
        reference = LAYOUT.const({**value, "m": _nested(value["m"])}).as_bits()
        assert word == reference
        back = unpack(LAYOUT, word)
        assert back["flag"] == value["flag"] and back["u"] == value["u"]
        assert back["s"] == value["s"]
        assert back["m"].tolist() == value["m"].reshape(-1).tolist()


def test_scalar_shapes():
    assert pack(signed(8), -1) == 0xFF
    assert unpack(signed(8), 0x80) == -128
    assert unpack(unsigned(8), 0x80) == 128


def test_wrong_element_count_is_reported():
    with pytest.raises(ValueError, match="expected 6 elements, got 5"):
        pack(LAYOUT, {"flag": 0, "m": np.zeros(5, int), "u": 0, "s": 0})
