"""`make program`'s report: the fields the issue tracker and the README read, and bad input."""

import json

import pytest

from bench import program


def test_report_of_one_preset(tmp_path):
    out = tmp_path / "report.json"
    program.main(["--preset", "u280", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["tasks"] == {"0": {"bit_exact": True}, "1": {"bit_exact": True}}
    entry = report["presets"]["u280"]
    assert entry["instructions"] > 100 and entry["dram_bytes"] > 17_000_000
    assert 0 < entry["predicted_cycles"] < entry["serial_cycles"]
    assert set(entry["unit_busy"]) >= {"linear", "attention", "layernorm", "load"}
    assert entry["tasks"]["0"]["cycles"] == entry["predicted_cycles"]


def test_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"linear": {"pi": 0}}))
    with pytest.raises(SystemExit) as e:
        program.main(["--preset", "u280", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    assert capsys.readouterr().out.strip() == f"{bad}: linear.pi must be an integer in [1, 64], not 0"
