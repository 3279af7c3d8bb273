"""`bench/throughput.py`: the side-by-side table and the ablation of the throughput levers."""

import json

from bench import throughput
from rtl.config import preset


def test_ablation_stacks_the_levers_up_to_the_preset(tmp_path):
    out = tmp_path / "throughput.json"
    throughput.main(["--preset", "u280", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["presets"]) == {"u280"} and set(report["ablation"]) == {"u280"}
    entry, rows = report["presets"]["u280"], report["ablation"]["u280"]
    # The u280 preset keeps the baseline's token lanes: that lever gets no row.
    assert [r["lever"] for r in rows] == ["baseline"] + [
        lever for lever, _ in throughput.LEVERS if lever != "token lanes (lever 2)"]
    assert rows[0]["fields"] == throughput.BASELINE["u280"]
    assert rows[-1]["fields"]["overlap_attention"] is True
    # Every lever sets its fields to the preset's, so the last row is the preset itself.
    assert rows[-1]["config"] == preset("u280").to_dict()
    assert rows[-1]["cycles"] == entry["cycles"]
    for before, after in zip(rows, rows[1:]):
        assert after["gain"] == round(before["cycles"] / after["cycles"], 3)
        assert after["cycles"] < before["cycles"]           # each lever pays on its own
    assert 0 < entry["linear_utilisation"] <= 1 and 0 < entry["frame_mac_utilisation"] <= 1
    assert entry["mac_units"] == preset("u280").linear.macs + preset("u280").attention.macs


def test_with_fields_replaces_dotted_fields():
    config = throughput.with_fields(preset("zcu102"), {"linear.t": 2, "attention.r": 7,
                                                       "norm_lanes": 4})
    assert (config.linear.t, config.attention.r, config.norm_lanes) == (2, 7, 4)
    assert config.linear.pi == preset("zcu102").linear.pi
