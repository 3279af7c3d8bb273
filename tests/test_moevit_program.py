"""The instruction set and program format: encoding through the RTL's layouts, static checks."""

from pathlib import Path

import pytest
from amaranth.lib import enum
from hypothesis import given, settings
from hypothesis import strategies as st

from moevit import program as prog
from moevit.program import (DramImage, Instruction, Program, ProgramError, Region, check_program,
                            decode, encode)
from rtl.config import AcceleratorConfig
from rtl.control import isa
from rtl.control.isa import ARGS, INSTRUCTION, Buffer, Opcode, Queue, Rows, Write

FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


@st.composite
def instructions(draw):
    op = draw(st.sampled_from(list(Opcode)))
    args = {}
    for name, f in ARGS[op]:
        if isinstance(f.shape, type) and issubclass(f.shape, enum.Enum):
            args[name] = draw(st.sampled_from(list(f.shape)))
        else:
            args[name] = draw(st.integers(0, (1 << f.width) - 1))
    flags = draw(st.sets(st.sampled_from(FLAGS)))
    return Instruction.make(op, flags, **args)


@settings(max_examples=300, deadline=None)
@given(instructions())
def test_encode_decode_round_trip(ins):
    word = encode(ins)
    assert 0 <= word < 1 << isa.INSTRUCTION_BITS
    assert decode(word) == ins
    # The RTL's view of the word (the same layout objects) sees the same fields.
    view = INSTRUCTION.from_bits(word)
    assert view.op == ins.op
    assert {f: bool(getattr(view.tokens, f)) for f in FLAGS} == {f: getattr(ins, f) for f in FLAGS}
    args = ARGS[ins.op].from_bits(view.args) if ARGS[ins.op].size else None
    for name, value in ins.args:
        assert getattr(args, name) == value


def test_host_and_rtl_share_the_layouts():
    assert prog.ARGS is isa.ARGS and prog.INSTRUCTION is isa.INSTRUCTION
    assert prog.HEADER is isa.HEADER


def test_docs_hold_the_generated_encoding_tables():
    text = (Path(__file__).resolve().parent.parent / "docs" / "isa.md").read_text()
    assert isa.markdown() in text, "docs/isa.md is stale: paste rtl.control.isa.markdown()"


@pytest.mark.parametrize("word, message", [
    (12, r"here: unknown opcode 12; opcodes: END=0"),
    (Opcode.LINEAR.value | (7 << 8), r"here: LINEAR field src = 7 is not a Buffer "
                                     r"\(X, H, QKV, A, G, LOGITS\)"),
    (Opcode.END.value | (1 << 8), r"here: END has bits set above its 0 argument bits"),
    (1 << 128, r"here: not a 128-bit word"),
])
def test_bad_words_are_named(word, message):
    with pytest.raises(ProgramError, match=message):
        decode(word, "here")


def test_bad_constructions_are_named():
    with pytest.raises(ProgramError, match=r"LOOP has no field 'count'; fields: body"):
        Instruction.make(Opcode.LOOP, count=3)
    with pytest.raises(ProgramError, match=r"unknown token flag 'pop'"):
        Instruction.make(Opcode.SYNC, {"pop"})
    with pytest.raises(ProgramError, match=r"LOOP field body = 32 does not fit its 5 bits"):
        encode(Instruction.make(Opcode.LOOP, body=32))


def _program(load=(), compute=(), store=()):
    end = Instruction.make(Opcode.END)
    return Program({Queue.LOAD: (*load, end), Queue.COMPUTE: (*compute, end),
                    Queue.STORE: (*store, end)}, input_bytes=64, output_bytes=64)


def test_program_bytes_round_trip_and_header_checks():
    p = _program(load=[Instruction.make(Opcode.LOAD_MATRIX, {"push_next"}, offset=64, beats=9)],
                 compute=[Instruction.make(Opcode.SYNC, {"pop_prev"})])
    raw = p.to_bytes()
    assert len(raw) == 16 * p.words and Program.from_bytes(raw) == p
    with pytest.raises(ProgramError, match=r"magic 0x00000000"):
        Program.from_bytes(bytes(len(raw)))
    with pytest.raises(ProgramError, match=r"the header lists 6 words"):
        Program.from_bytes(raw[:-16])
    bad = bytearray(raw)
    bad[16 * 3] = 13                 # header, load[0], load END, then compute[0]: opcode 13
    with pytest.raises(ProgramError, match=r"program compute\[0\]: unknown opcode 13"):
        Program.from_bytes(bytes(bad))


CONFIG = AcceleratorConfig()


@pytest.mark.parametrize("p, message", [
    (_program(load=[Instruction.make(Opcode.NORM, rows=1, cols=192)]),
     r"load\[0\]: NORM cannot run in the load queue"),
    (_program(load=[Instruction.make(Opcode.SYNC, {"pop_prev"})]),
     r"load\[0\]: the load queue has no token flag pop_prev"),
    (_program(store=[Instruction.make(Opcode.SYNC, {"push_next"})]),
     r"store\[0\]: the store queue has no token flag push_next"),
    (Program({Queue.LOAD: (), Queue.COMPUTE: (Instruction.make(Opcode.END),),
              Queue.STORE: (Instruction.make(Opcode.END),)}, 64, 64),
     r"program load stream must end with END"),
    (_program(compute=[Instruction.make(Opcode.LOOP, body=3)]),
     r"compute\[0\]: LOOP body of 3 runs past the stream"),
    (_program(compute=[Instruction.make(Opcode.LOOP, body=2), Instruction.make(Opcode.LOOP, body=1),
                       Instruction.make(Opcode.SYNC), Instruction.make(Opcode.SYNC)]),
     r"compute\[1\]: loops do not nest"),
    (_program(compute=[Instruction.make(Opcode.LOOP, body=1),
                       Instruction.make(Opcode.SYNC, {"pop_prev"})]),
     r"compute\[1\]: instructions in a loop body carry no tokens"),
    (_program(compute=[Instruction.make(Opcode.NORM, row=100, rows=30, cols=192)]),
     r"compute\[0\]: NORM rows 100 .. 129 must lie in buffer X's 129 rows"),
    (_program(compute=[Instruction.make(Opcode.NORM, rows=1, cols=96)]),
     r"NORM cols = 96, the units are built for capacity.dim = 192"),
    (_program(load=[Instruction.make(Opcode.LOAD_MATRIX, offset=16, beats=1)]),
     r"LOAD_MATRIX offset 16 must be a multiple of the 32-byte load-path word"),
    (_program(load=[Instruction.make(Opcode.LOAD_TENSOR, buffer=Buffer.X, rows=1, cols=8,
                                     flip_sign=1)]),
     r"LOAD_TENSOR flip_sign needs an int8 buffer, not X"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=1, src=Buffer.X, dst=Buffer.H, rows=1,
                                        cols=1)]),
     r"LINEAR src must be an int8 buffer \(H, A, G\), not X"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=13, src=Buffer.H, dst=Buffer.G,
                                        rows=1, cols=1)]),
     r"LINEAR columns 0 .. 207 must lie in buffer H's 192 columns"),
    (_program(load=[Instruction.make(Opcode.LOAD_TENSOR, buffer=Buffer.H, rows=1, cols=8)]),
     r"LOAD_TENSOR moves X or G, not H"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=1, src=Buffer.H, dst=Buffer.H,
                                        write=Write.ADD, rows=1, cols=1)]),
     r"LINEAR write ADD needs dst in X, not H"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=1, src=Buffer.H, dst=Buffer.X,
                                        write=Write.ROUTE, rows=129, cols=17, top_k=2)]),
     r"LINEAR cols = 17, the units are built for capacity.experts = 16"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=1, src=Buffer.H, dst=Buffer.X,
                                        write=Write.COMBINE, rows=1, cols=8)]),
     r"LINEAR COMBINE reads an expert queue"),
    (_program(compute=[Instruction.make(Opcode.LINEAR, kb=1, src=Buffer.H, dst=Buffer.X,
                                        write=Write.ROUTE, rows_from=Rows.EXPERT, cols=16)]),
     r"LINEAR ROUTE reads a RANGE of rows"),
    (_program(compute=[Instruction.make(Opcode.ATTENTION, tokens=129, heads=3, head_dim=40,
                                        dim=192)]),
     r"ATTENTION head_dim = 40, the units are built for capacity.head_dim = 64"),
    (_program(compute=[Instruction.make(Opcode.ATTENTION, tokens=129, heads=4, head_dim=64,
                                        dim=192)]),
     r"ATTENTION heads 0 .. 3 of 64 channels must lie in dim 192"),
    (_program(compute=[Instruction.make(Opcode.ATTENTION, tokens=129, heads=3, head_dim=64,
                                        dim=192, codes=isa.Codes.SQRT2)]),
     r"ATTENTION codes sqrt2 are not built in this config"),
    (_program(load=[Instruction.make(Opcode.SYNC, attention=1)]),
     r"load\[0\]: SYNC attention waits for the compute queue's attention unit"),
    (_program(compute=[Instruction.make(Opcode.ATTENTION, {"push_next"}, tokens=129, heads=3,
                                        head_dim=64, dim=192),
                       Instruction.make(Opcode.SYNC, attention=1)]),
     r"compute\[0\]: ATTENTION completes when the unit takes it, so it pushes no tokens"),
    (_program(compute=[Instruction.make(Opcode.ATTENTION, tokens=129, heads=3, head_dim=64,
                                        dim=192),
                       Instruction.make(Opcode.SYNC),
                       Instruction.make(Opcode.ATTENTION, tokens=129, heads=3, head_dim=64,
                                        dim=192),
                       Instruction.make(Opcode.SYNC, attention=1),
                       Instruction.make(Opcode.ATTENTION, tokens=129, heads=3, head_dim=64,
                                        dim=192)]),
     r"program compute\[4\]: no SYNC attention waits for it before END"),
])
def test_static_checks_name_the_instruction(p, message):
    with pytest.raises(ProgramError, match=message):
        check_program(p, CONFIG)


def test_program_larger_than_the_instruction_memory():
    p = _program(compute=[Instruction.make(Opcode.SYNC)] * 1021)
    with pytest.raises(ProgramError, match=r"program has 1025 instruction words, the config holds "
                                           r"capacity.instructions = 1024"):
        check_program(p, CONFIG)


def test_dram_image_regions_must_not_overlap():
    image = DramImage(bytearray(256), {"a": Region("a", 0, 64), "b": Region("b", 32, 64)}, 32)
    with pytest.raises(ProgramError, match=r"regions 'a' \[0, 64\) and 'b' \[32, 96\) overlap"):
        image.validate()
    with pytest.raises(ProgramError, match=r"region 'c' at 48 must start at a multiple of 32"):
        DramImage(bytearray(256), {"c": Region("c", 48, 32)}, 32).validate()
    with pytest.raises(ProgramError, match=r"region 'd' \[224, 288\) runs past the image's 256"):
        DramImage(bytearray(256), {"d": Region("d", 224, 64)}, 32).validate()
    with pytest.raises(ProgramError, match=r"DRAM read of 64 bytes at 224 is outside"):
        DramImage(bytearray(256)).read(224, 64)
