"""Formal checks of the stream and bus protocols (the quick part of ``make formal``).

Each check proves its rules, bounds its framing, and must catch the deliberately broken
variants of its properties: a check that cannot fail is no check."""

import dataclasses

import pytest
from amaranth.hdl import Fragment

from rtl.compute.recip import Reciprocal
from sim.formal import StreamHarness, prove
from sim.formal_units import CHECKS, axi_write_environment, dma_environment, run, verdicts, verify

_BY_NAME = {check.name: check for check in CHECKS}


@pytest.mark.parametrize("name, rules", [("recip", "proven"), ("registers", "proven"),
                                         ("dma_writer", "bounded")])
def test_rules_hold_and_every_broken_variant_is_caught(name, rules, tmp_path):
    proofs = verify(_BY_NAME[name], tmp_path)
    assert verdicts(proofs), {n: p.summary for n, p in proofs.items()}
    assert {"drop_valid", "change_payload"} <= set(proofs)
    assert proofs["rules"].verdict == rules        # k-induction closes, or BMC to the depth


def test_a_latency_promise_one_cycle_shorter_than_the_units_fails(tmp_path):
    # Reciprocal(8) promises its result `latency` cycles after the operand: one cycle less
    # is a counterexample, so the bound is tight.
    dut = Reciprocal(8)
    harness = StreamHarness(dut, owed=lambda m, counts, inputs: {"o": counts["i"]},
                            bound=dut.latency - 2)
    assert prove(harness, "recip_tight", tmp_path, depth=24).verdict == "failed"


def test_the_burst_rules_can_fail(tmp_path):
    # The DMA writer keeps its bursts inside AXI's 4 KB pages; held to 64-byte pages, its
    # 32-byte bursts at any word address cross one: the page assertion must catch it.
    check = dataclasses.replace(_BY_NAME["dma_writer"],
                                environment=dma_environment(axi_write_environment, 64))
    assert run(check, "framing", tmp_path).verdict == "failed"


def test_harness_arguments_are_checked():
    dut = Reciprocal(8)
    with pytest.raises(ValueError, match=r"broken must be None or one of"):
        StreamHarness(dut, broken="wrong")
    with pytest.raises(ValueError, match=r"free names \['busy'\] are not inputs of the unit"):
        StreamHarness(dut, free=("busy",))
    Fragment.get(dut, None)          # (used: no unused-elaboratable warning)
