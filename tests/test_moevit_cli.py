"""The moevit command line as a new user runs it: import, quantize, compile, run, report."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from golden.config import tiny_test
from golden.float_model import random_image
from golden.int_model import QuantParams, int_forward, pixels_from_image
from golden.weights import init_weights, load_npz
from moevit.checkpoints import write_edge_moe, write_safetensors
from moevit.cli import main
from moevit.compiler import CompiledModel
from moevit.dse import Space

CFG = tiny_test()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    weights = init_weights(CFG, seed=4)
    write_edge_moe(d / "edge", weights, CFG)
    write_safetensors(d / "m3vit.safetensors", weights, CFG, prefix="module.backbone.")
    np.save(d / "calib.npy", np.stack([random_image(CFG, seed=s) for s in range(3)]))
    return d


def _ok(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _fails(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.xdist_group("ecp5_tiny_test_verilator")    # its build: tests/test_sim_top.py
def test_whole_flow_on_the_simulator(work, capsys):
    d = str(work)
    out = _ok(["import", f"{d}/edge", "-o", f"{d}/w.npz", "--model", "tiny_test"], capsys)
    assert "30 tensors" in out and "edge-moe" in out
    _ok(["import", f"{d}/m3vit.safetensors", "-o", f"{d}/w_torch.npz", "--model", "tiny_test"],
        capsys)
    a, b = load_npz(f"{d}/w.npz", CFG), load_npz(f"{d}/w_torch.npz", CFG)
    assert all(np.array_equal(a[k], b[k]) for k in a if k not in ("cls_token", "pos_embed"))
    # The stored config travels with the file: no --model from here on.
    _ok(["quantize", f"{d}/w.npz", "--calib", f"{d}/calib.npy", "-o", f"{d}/q.npz"], capsys)
    qp = QuantParams.load(f"{d}/q.npz")
    out = _ok(["compile", f"{d}/q.npz", "--board", "ecp5_85f", "--fit", "-o", f"{d}/compiled"],
              capsys)
    assert re.search(r"schedule model: [\d,]+ cycles per frame", out)
    compiled = CompiledModel.load(f"{d}/compiled")
    out = _ok(["run", f"{d}/compiled", "--target", "sim", "--images", f"{d}/calib.npy",
               "--limit", "2", "--task", "1", "--check", "-o", f"{d}/out.npz",
               "--json", f"{d}/run.json", "--log-dir", f"{d}/logs"], capsys)
    assert "2 frame(s)" in out
    with np.load(f"{d}/out.npz", allow_pickle=False) as f:
        outputs, cycles = f["outputs"], f["cycles"]
    images = np.load(f"{d}/calib.npy")
    for n in range(2):
        expected = int_forward(qp, pixels_from_image(CFG, images[n]), task=1)
        assert np.array_equal(outputs[n], expected), n
    run = json.loads((work / "run.json").read_text())
    assert [f["cycles"] for f in run["frames"]] == cycles.tolist()
    assert all(f["bit_exact"] and f["error"] == "none" for f in run["frames"])
    out = _ok(["report", f"{d}/compiled", "--board", "ecp5_85f", "--rtl", f"{d}/run.json",
               "--task", "1", "--images", f"{d}/calib.npy", "--weights", f"{d}/w.npz",
               "--quant", f"{d}/q.npz", "-o", f"{d}/report.html"], capsys)
    page = (work / "report.html").read_text()
    data = json.loads(re.search(r"id='data'>(.*)</script>", page).group(1))
    assert data["rtl"]["equal_to_model"] and data["cycles"] == cycles[0]
    assert "http" not in page.replace("http-equiv", "")               # self-contained
    assert set(data["fidelity"]["routing"]) == {"blocks.1"}
    assert compiled.config.name == "ecp5_85f"
    # A frame that cannot finish in time ends in the driver's named error, not a hang.
    err = _fails(["run", f"{d}/compiled", "--images", f"{d}/calib.npy", "--limit", "1",
                  "--timeout", "100", "--log-dir", f"{d}/logs"], capsys)
    assert "frame 0: no ap_done within 100 cycles" in err
    # Board targets need their libraries (none here): one line, no traceback.
    err = _fails(["run", f"{d}/compiled", "--target", "u280", "--images", f"{d}/calib.npy"],
                 capsys)
    assert "target 'u280' needs" in err


def test_python_dash_m_reaches_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "moevit", "--help"], capture_output=True,
                         text=True, check=True)
    for command in ("import", "quantize", "compile", "run", "report", "deploy"):
        assert command in out.stdout


def test_report_refuses_a_run_of_another_frame_or_quantized_set(work, capsys):
    d = str(work)
    _ok(["import", f"{d}/edge", "-o", f"{d}/wr.npz", "--model", "tiny_test"], capsys)
    _ok(["quantize", f"{d}/wr.npz", "--calib", f"{d}/calib.npy", "-o", f"{d}/qr.npz"], capsys)
    _ok(["quantize", f"{d}/wr.npz", "--calib", f"{d}/calib.npy", "--limit", "1",
         "-o", f"{d}/qr1.npz"], capsys)
    _ok(["compile", f"{d}/qr.npz", "--fit", "-o", f"{d}/cr"], capsys)
    run = {"model": "tiny_test", "config": "zcu102", "task": 0,
           "frames": [{"cycles": 1, "busy": {}, "input_sha256": "0" * 64}]}
    (work / "other.json").write_text(json.dumps(run))
    err = _fails(["report", f"{d}/cr", "--rtl", f"{d}/other.json", "--images", f"{d}/calib.npy",
                  "-o", f"{d}/r.html"], capsys)
    assert "its first frame ran another image or task" in err
    err = _fails(["report", f"{d}/cr", "--quant", f"{d}/qr1.npz", "-o", f"{d}/r.html"], capsys)
    assert f"--quant {d}/qr1.npz: not the quantized set {d}/cr was compiled from" in err
    err = _fails(["report", f"{d}/cr", "--fit", "-o", f"{d}/r.html"], capsys)
    assert "was compiled for config 'zcu102'; --board/--config/--fit apply" in err
    (work / "cr" / "manifest.json").write_text('{"format": 1}')
    err = _fails(["run", f"{d}/cr", "--images", f"{d}/calib.npy"], capsys)
    assert "manifest.json: missing or malformed entry 'dram_sha256'" in err


@pytest.fixture(scope="module")
def quantized(work):
    d = str(work)
    assert main(["import", f"{d}/edge", "-o", f"{d}/wd.npz", "--model", "tiny_test"]) == 0
    assert main(["quantize", f"{d}/wd.npz", "--calib", f"{d}/calib.npy", "-o",
                 f"{d}/qd.npz"]) == 0
    return f"{d}/qd.npz"


# The search over its restricted space: 4 configs, every field but t and burst_beats
# pinned, the weight bank at a value stage 1's preferred 576 is not (the result must stay
# inside the space).
RESTRICTED = ["--space", "p=16", "--space", "t=4,8", "--space", "r=17", "--space",
              "norm_lanes=32", "--space", "bank_words=288", "--space", "burst_beats=32,64",
              "--space", "outstanding=8"]


@pytest.mark.parametrize("space", [
    pytest.param(RESTRICTED, id="restricted"),
    # The whole default space: dozens of configs, each elaborated for its census (12 min).
    pytest.param([], id="full", marks=pytest.mark.slow),
])
def test_dse_writes_a_config_that_compile_takes(work, quantized, capsys, space):
    d = str(work)
    out = _ok(["dse", quantized, "--board", "u280", "--workers", "1", "-o", f"{d}/dse",
               *space], capsys)
    data = json.loads((work / "dse" / "u280.json").read_text())
    if space:
        assert data["evaluated"] <= 4
        assert data["genes"]["bank_words"] == 288 and data["genes"]["t"] in (4, 8)
    assert f"{data['predicted_cycles']:,} cycles per frame" in out
    assert (work / "dse" / "u280.png").is_file()
    out = _ok(["compile", quantized, "--config", f"{d}/dse/u280.config.json", "-o",
               f"{d}/cd"], capsys)
    assert "schedule model:" in out
    assert CompiledModel.load(f"{d}/cd").config.linear.t == data["genes"]["t"]


def test_dse_help_lists_the_fields_of_the_space(capsys):
    assert main(["dse", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    listed = re.search(r"Fields: ([\w, ]+)\.", text).group(1)
    assert listed.split(", ") == [f.name for f in dataclasses.fields(Space)]


@pytest.mark.parametrize("argv, message", [
    (["import", "missing_folder", "-o", "x.npz"], "missing_folder: no such file or folder"),
    (["import", "{d}/edge", "-o", "{d}/x.npz"],
     "patch_embed_weight.float32.bin: 98304 bytes, expected 589824"),  # m3vit_tiny by default
    (["import", "{d}/edge", "-o", "{d}/x.txt", "--model", "tiny_test"],
     "-o {d}/x.txt: the output must be a .npz file"),
    (["import", "{d}/edge", "-o", "{d}/x.npz", "--model", "huge"], "unknown"),
    (["quantize", "{d}/nothing.npz", "--calib", "{d}/calib.npy", "-o", "{d}/q.npz"],
     "nothing.npz: no such file"),
    (["compile", "{d}/calib.npy", "-o", "{d}/c"], "not a quantized parameter set"),
    (["compile", "x.npz", "--board", "vu19p", "-o", "c"], "argument --board: invalid choice"),
    (["run", "{d}/nothing", "--images", "{d}/calib.npy"], "nothing"),
    (["import", "{d}/calib.npy", "-o", "{d}/x.npz", "--format", "npz", "--model", "tiny_test"],
     "calib.npy: a .npy array, expected an .npz archive"),
    (["compile", "{d}/edge/l0_qkv_bias.float32.bin", "-o", "{d}/c"],
     "not a quantized parameter set"),
    (["dse", "{d}/q.npz", "--board", "u280", "--population", "1", "-o", "{d}/dse"],
     "--population must be in [2, 256], not 1"),
    (["dse", "{d}/q.npz", "--board", "u280", "--generations", "0", "-o", "{d}/dse"],
     "--generations must be in [1, 100], not 0"),
    (["dse", "{d}/q.npz", "--board", "u280", "--space", "lanes=4", "-o", "{d}/dse"],
     "--space 'lanes=4': expected FIELD=V1,V2,... with FIELD one of p, t, r, norm_lanes, "
     "bank_words, burst_beats, outstanding"),
    (["dse", "{d}/q.npz", "--board", "u280", "--space", "t=0,4", "-o", "{d}/dse"],
     "--space 't=0,4': the values of t must be positive integers"),
    (["dse", "{d}/q.npz", "--board", "u280", "--space", "t=four", "-o", "{d}/dse"],
     "--space 't=four': the values of t must be positive integers"),
])
def test_errors_are_one_line_with_exit_code_2(work, capsys, argv, message):
    err = _fails([a.format(d=work) for a in argv], capsys)
    assert message.format(d=work) in err


def test_quantize_reads_a_folder_of_pictures(work, capsys):
    from PIL import Image
    pics = work / "pics"
    pics.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for n in range(2):       # wider than the model: scaled to cover, then cropped
        Image.fromarray(rng.integers(0, 256, (40, 90, 3), np.uint8)).save(pics / f"{n}.png")
    (work / "pics" / "notes.txt").write_text("not a picture")
    weights = init_weights(CFG, seed=4)
    write_safetensors(work / "w.safetensors", weights, CFG)
    _ok(["import", str(work / "w.safetensors"), "-o", str(work / "wp.npz"), "--model",
         "tiny_test"], capsys)
    out = _ok(["quantize", str(work / "wp.npz"), "--calib", str(pics), "-o",
               str(work / "qp.npz"), "--method", "minmax"], capsys)
    assert "on 2 calibration image(s)" in out
    (pics / "2.png").write_bytes(b"not a png")
    err = _fails(["quantize", str(work / "wp.npz"), "--calib", str(pics), "-o",
                  str(work / "qp.npz")], capsys)
    assert "2.png: not a readable picture" in err


@pytest.mark.slow
def test_m3vit_tiny_from_an_edge_moe_folder_on_the_simulator(tmp_path, capsys):
    """The issue's new-user path at full size: Edge-MoE folder -> import -> quantize -> compile
    for the zcu102 preset -> one frame in Verilator, equal to the integer model."""
    from golden.config import m3vit_tiny
    cfg = m3vit_tiny()
    write_edge_moe(tmp_path / "weights", init_weights(cfg, seed=2), cfg)
    images = np.stack([random_image(cfg, seed=n) for n in range(2)])
    np.save(tmp_path / "calib.npy", images)
    d = str(tmp_path)
    _ok(["import", f"{d}/weights", "-o", f"{d}/w.npz"], capsys)
    _ok(["quantize", f"{d}/w.npz", "--calib", f"{d}/calib.npy", "-o", f"{d}/q.npz"], capsys)
    _ok(["compile", f"{d}/q.npz", "--board", "zcu102", "-o", f"{d}/compiled"], capsys)
    _ok(["run", f"{d}/compiled", "--images", f"{d}/calib.npy", "--limit", "1", "--check",
         "-o", f"{d}/out.npz", "--log-dir", f"{d}/logs"], capsys)
    qp = QuantParams.load(f"{d}/q.npz")
    with np.load(f"{d}/out.npz", allow_pickle=False) as f:
        assert np.array_equal(f["outputs"][0], int_forward(qp, pixels_from_image(cfg, images[0])))
