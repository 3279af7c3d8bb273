"""AcceleratorConfig: derived unit configs, presets within their devices, JSON, named errors."""

import dataclasses

import pytest

from golden.config import m3vit_tiny, tiny_test
from platforms.devices import DEVICES
from platforms.resources import dsp_by_unit
from rtl.compute.linear import LinearConfig
from rtl.config import (BUFFERS, PRESETS, AcceleratorConfig, AttentionArray, AxiPorts, Capacity,
                        LinearArray, preset)

#: The device each preset is sized for.
PRESET_DEVICES = {"ecp5_85f": "LFE5U-85F", "zcu102": "xczu9eg-ffvb1156-2-e",
                  "u280": "xcu280-fsvh2892-2L-e"}
#: Usable bytes of one block RAM: 36 Kb (UltraScale+ RAMB36E2) or 18 Kb (ECP5 DP16KD).
BRAM_BYTES = {"xcup": 36 * 1024 // 8, "ecp5": 18 * 1024 // 8}
URAM_BYTES = 288 * 1024 // 8


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_fit_their_device(name):
    config = preset(name)
    device = DEVICES[PRESET_DEVICES[name]]
    assert sum(dsp_by_unit(config, device.family).values()) <= device.DSP
    memory = sum(config.memory_bytes().values())
    assert memory <= 0.8 * (device.BRAM * BRAM_BYTES[device.family] + device.URAM * URAM_BYTES)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    config = preset(name)
    assert AcceleratorConfig.from_json(config.to_json()) == config
    assert AcceleratorConfig.from_dict({}) == AcceleratorConfig()


def test_unit_configs_are_derived_from_the_config():
    config = AcceleratorConfig(linear=LinearArray(pi=8, po=8, t=2, dsp_packing=True,
                                                  bank_words=200),
                               attention=AttentionArray(r=5, dp=8),
                               axi=AxiPorts(data_bits=128, ports=2),
                               capacity=Capacity(classes=1000))
    lc = config.linear_config()
    assert lc == LinearConfig(pi=8, po=8, t=2, max_in=768, max_out=1000, max_weight_words=200,
                              bus_width=256, dsp_packing=True, out_width=16, gelu=True)
    att = config.attention_config(16, "log2")
    assert (att.r, att.dp, att.h, att.head_dim, att.max_tokens) == (5, 8, 1, 16, 129)
    # Units move words of PI = PO = Dp elements; memory words are the wider of a unit word
    # and the 256-bit load path; buffer rows are whole memory words.
    assert config.word == 8
    assert (config.memory_word_bytes("int8"), config.memory_word_bytes("int16")) == (32, 32)
    assert (config.row_align("int8"), config.row_align("int16")) == (32, 16)
    assert config.buffer_shape("H") == (129, 192)
    assert config.buffer_shape("QKV") == (129, 576)
    assert config.buffer_shape("LOGITS") == (1, 1008)
    assert set(config.buffers) == set(BUFFERS)


def test_shared_buffers_alias_the_readers_memories():
    shared = AcceleratorConfig(share_buffers=True)
    assert [shared.buffer_memory(b) for b in BUFFERS] == ["X", "H", "QKV", "H", "QKV", "LOGITS"]
    assert shared.memory_bytes()["buffers"] < AcceleratorConfig().memory_bytes()["buffers"]
    assert AcceleratorConfig(capacity=Capacity(classes=0)).buffers == ("X", "H", "QKV", "A", "G")


@pytest.mark.parametrize("make, message", [
    (lambda: LinearArray(pi=0), r"linear.pi must be an integer in \[1, 64\], not 0"),
    (lambda: LinearArray(t=17), r"linear.t must be an integer in \[1, 16\], not 17"),
    (lambda: LinearArray(dsp_packing=1), r"linear.dsp_packing must be a bool, not 1"),
    (lambda: AttentionArray(r=129), r"attention.r must be an integer in \[1, 128\], not 129"),
    (lambda: AttentionArray(codes="log2"), r"attention.codes must be a sequence of log2, sqrt2, mant4"),
    (lambda: AttentionArray(codes=("log3",)), r"attention.codes must be distinct entries"),
    (lambda: AxiPorts(data_bits=96), r"axi.data_bits must be a power of two in \[64, 1024\]"),
    (lambda: AxiPorts(ports=3), r"axi.ports must be 1, 2, 4 or 8, not 3"),
    (lambda: AxiPorts(data_bits=1024, ports=8), r"axi.ports \* axi.data_bits must be at most 4096"),
    (lambda: AxiPorts(burst_beats=257), r"axi.burst_beats must be an integer in \[1, 256\]"),
    (lambda: Capacity(top_k=5), r"capacity.top_k must be an integer in \[1, 4\], not 5"),
    (lambda: Capacity(experts=1), r"capacity.experts must be an integer in \[2, 64\], not 1"),
    (lambda: AcceleratorConfig(norm_lanes=0), r"norm_lanes must be an integer in \[1, 32\]"),
    (lambda: AcceleratorConfig(norm_lanes=16, capacity=Capacity(dim=200)),
     r"norm_lanes \(16\) must divide capacity.dim \(200\)"),
    (lambda: AcceleratorConfig(attention=AttentionArray(dp=8)),
     r"linear.pi, linear.po and attention.dp must be one power of two, the buffer word"),
    (lambda: AcceleratorConfig(attention=AttentionArray(h=3)), r"attention.h must be 1"),
    (lambda: AcceleratorConfig(linear=LinearArray(pi=128, po=128), attention=AttentionArray(
        dp=128)), r"linear.pi must be an integer in \[1, 64\], not 128"),
    (lambda: AcceleratorConfig(linear=LinearArray(pi=4, po=4), attention=AttentionArray(dp=4),
                               axi=AxiPorts(data_bits=64, ports=1), norm_lanes=16),
     r"norm_lanes \(16\) must divide the X buffer's memory word \(4 elements\)"),
    (lambda: AcceleratorConfig(linear=LinearArray(pi=4, po=4, bank_words=100),
                               attention=AttentionArray(dp=4)),
     r"linear.bank_words must hold one output fold of the widest input \(ceil\(768 / 4\) = 192"),
    (lambda: AcceleratorConfig(linear={"pi": 4}), r"linear must be a LinearArray"),
    (lambda: AcceleratorConfig(name=""), r"name must be a non-empty string"),
    (lambda: AcceleratorConfig.from_dict({"lanes": 4}),
     r"unknown AcceleratorConfig field 'lanes'"),
    (lambda: AcceleratorConfig.from_dict({"linear": {"p": 4}}),
     r"unknown LinearArray field 'linear.p'"),
    (lambda: preset("zcu104"), r"unknown accelerator preset 'zcu104'; valid: ecp5_85f, zcu102"),
])
def test_bad_fields_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_fitted_takes_the_model_shape_and_the_lanes_its_width_allows():
    wide = dataclasses.replace(preset("u280"), norm_lanes=32)
    tiny = wide.fitted(m3vit_tiny())
    assert (tiny.capacity.dim, tiny.capacity.tokens, tiny.norm_lanes) == (192, 129, 32)
    assert wide.fitted(tiny_test()).norm_lanes == 32                    # D = 32
    narrow = wide.fitted(tiny_test(), dim=48)                            # a 48-wide model
    assert (narrow.capacity.dim, narrow.norm_lanes) == (48, 16)


def test_fitted_narrows_the_buffer_word_to_the_heads():
    u280 = preset("u280")                                   # a 32-wide word, 64-wide heads
    assert u280.fitted(m3vit_tiny()).word == 32
    fitted = u280.fitted(tiny_test())                       # 16-wide heads
    assert (fitted.linear.pi, fitted.linear.po, fitted.attention.dp) == (16, 16, 16)
    assert fitted.linear.bank_words == 2 * u280.linear.bank_words    # scaled as the word halves
    assert (fitted.linear.t, fitted.attention.r) == (u280.linear.t, u280.attention.r)
    assert u280.fitted(tiny_test(), head_dim=24).word == 8  # 24 = 8 x 3
