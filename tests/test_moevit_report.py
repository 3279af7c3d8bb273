"""The HTML report: its figures are the schedule model's, the page is self-contained."""

import json
import re

import pytest

from golden.config import tiny_test
from golden.float_model import random_image
from golden.int_model import pixels_from_image
from golden.ptq import calibrate
from golden.weights import init_weights
from moevit.compiler import compile_model
from moevit.executor import execute
from moevit.report import LANES, build_report, write_html
from moevit.schedule import schedule
from platforms.boards import board
from platforms.resources import estimate
from rtl.config import preset


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_test()
    weights = init_weights(cfg, seed=6)
    images = [random_image(cfg, seed=n) for n in range(3)]
    qp = calibrate(cfg, weights, images[:2])
    compiled = compile_model(qp, preset("u280").fitted(cfg))
    return cfg, weights, images, qp, compiled


def test_report_figures_are_the_schedule_models(setup):
    cfg, _, images, _, compiled = setup
    pixels = pixels_from_image(cfg, images[2])
    sched = schedule(compiled.config, execute(compiled, pixels, 1)[1])
    report = build_report(compiled, pixels, task=1, board="u280")
    assert report["cycles"] == sched.cycles and report["serial_cycles"] == sched.serial_cycles
    assert sum(c for _, c in report["blocks"]) == sched.cycles
    assert [label for label, _ in report["blocks"]] == ["patch embed", "block 0", "block 1"]
    assert set(report["timeline"]) <= set(LANES)
    for lane, spans in report["timeline"].items():
        assert all(0 < s <= e < sched.cycles for s, e in spans), lane
    assert report["busy"]["linear"] == sched.busy["linear"]
    assert report["budget"]["dsp"] == 9_024
    # With a board: the whole estimate, the same as the design-space search's.
    est = estimate(compiled.config, board("u280")[1])
    assert {k: report["resources"][f"{k}_estimate"] for k in ("dsp", "bram", "lut", "ff")} \
        == {k: est[k] for k in ("dsp", "bram", "lut", "ff")}
    assert report["resources"]["fits"] and report["budget"]["lut"] == board("u280")[1].LUT
    assert report["routes"] == 1


def test_rtl_cycles_that_differ_are_flagged(setup, tmp_path):
    cfg, weights, images, qp, compiled = setup
    pixels = pixels_from_image(cfg, images[2])
    report = build_report(compiled, pixels, rtl={"cycles": 5, "busy": {"linear": 1}},
                          qp=qp, weights=weights, images=images[:2])
    assert report["rtl"]["equal_to_model"] is False
    assert set(report["fidelity"]["routing"]) == {"blocks.1"}
    assert 0 <= report["fidelity"]["routing"]["blocks.1"] <= 1
    assert report["fidelity"]["sqnr_db"]["embed"] > 20
    page = write_html(report, tmp_path / "r.html").read_text()
    assert "DIFFERENT from the schedule model" in page
    assert re.search(r"<(script|img|link)[^>]+src=['\"]http", page) is None
    assert page.count("data:image/png;base64,") == 3            # timeline, blocks, fidelity
    data = json.loads(re.search(r"id='data'>(.*)</script>", page).group(1))
    assert data["cycles"] == report["cycles"]
