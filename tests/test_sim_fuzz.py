"""The fuzz campaigns (the short version of ``make fuzz``) and their shrink and replay."""

import dataclasses
import json

import pytest

from sim import fuzz
from sim.fuzz import CAMPAIGNS, draw_batch, replay, shrink


@pytest.mark.parametrize("name", sorted(CAMPAIGNS))
def test_a_few_hundred_vectors_match_golden(name, tmp_path):
    entry = fuzz.fuzz(CAMPAIGNS[name], 200, seed=2026, out=tmp_path)
    assert entry["vectors"] >= 200
    assert entry["mismatches"] == 0, entry["failures"]


def test_batches_are_reproducible_from_seed_and_index():
    campaign = CAMPAIGNS["softmax_codes"]
    a, b = draw_batch(campaign, 5, 3), draw_batch(campaign, 5, 3)
    assert a[1:] == b[1:] and all((x == y).all() for x, y in zip(a[0], b[0]))
    assert any(len(x) != len(y) or (x != y).any()
               for x, y in zip(a[0], draw_batch(campaign, 6, 3)[0]))


def _bug_on_length(length):
    """The softmax campaign with a 'bug' that rows of ``length`` scores trigger."""
    real = CAMPAIGNS["softmax_codes"].run

    def run(rows, i_flow, o_flow, seed):
        real(rows, i_flow, o_flow, seed)
        if any(len(r) == length for r in rows):
            raise AssertionError(f"row of {length}")
    return dataclasses.replace(CAMPAIGNS["softmax_codes"], name="softmax_codes", run=run)


def test_a_failure_shrinks_to_one_vector_and_replays(tmp_path, monkeypatch):
    broken = _bug_on_length(7)
    rows, i_flow, o_flow = draw_batch(broken, 11, 1)
    assert sum(len(r) == 7 for r in rows) >= 2
    keep = shrink(broken, rows, i_flow, o_flow, 12)
    assert len(keep) == 1 and len(rows[keep[0]]) == 7
    fixed = CAMPAIGNS["softmax_codes"]
    monkeypatch.setitem(CAMPAIGNS, "softmax_codes", broken)
    entry = fuzz.fuzz(broken, 400, seed=11, out=tmp_path)
    assert entry["mismatches"] >= 1
    record = json.loads((tmp_path / "softmax_codes-seed11-batch1.json").read_text())
    assert len(record["indices"]) == 1 and replay(record) == "row of 7"
    monkeypatch.setitem(CAMPAIGNS, "softmax_codes", fixed)       # the 'bug' fixed: it passes
    assert replay(record) is None


@pytest.mark.parametrize("argv, message", [
    (["--vectors", "0"], "--vectors must be at least 1, not 0"),
    (["--replay", "nowhere.json"], "--replay nowhere.json: not a fuzz reproducer"),
])
def test_command_line_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        fuzz.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
