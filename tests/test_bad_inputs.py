"""The bad-input corpus: every file a user hands the tools, damaged the ways files get
damaged (truncated, wrong dtype, NaN and inf, wrong shapes, unknown keys, pickled objects,
absurd sizes), is refused at load time with a message that names the file and what is
wrong. Loading never runs pickled code and never trusts a header's size."""

import io
import json
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest

from golden.config import ModelConfig, tiny_test
from golden.float_model import random_image
from golden.int_model import QuantParams
from golden.ptq import calibrate
from golden.weights import init_weights
from moevit.checkpoints import read_weights, write_edge_moe, write_safetensors
from moevit.cli import main
from moevit.compiler import CompiledModel, compile_model
from rtl.config import AcceleratorConfig, preset

CFG = tiny_test()
FIRST = "patch_embed.proj.weight"          # the first weight tensor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good files of every kind, to damage."""
    d = tmp_path_factory.mktemp("good")
    weights = init_weights(CFG, seed=1)
    qp = calibrate(CFG, weights, [random_image(CFG, seed=n) for n in range(2)])
    np.savez(d / "w.npz", **weights)
    write_safetensors(d / "w.safetensors", weights, CFG)
    write_edge_moe(d / "edge", weights, CFG)
    qp.save(d / "qp.npz")
    compile_model(qp, preset("zcu102").fitted(CFG)).save(d / "compiled")
    (d / "config.json").write_text(preset("zcu102").to_json())
    (d / "model.json").write_text(CFG.to_json())
    return {"dir": d, "weights": weights, "qp": qp}


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(path, members):
    """An .npz of raw .npy members (``{name: bytes}``)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(f"{name}.npy", raw)
    return path


def _same_length(raw, header):
    """``header`` (a .npy with a changed shape text) with its header block padded back to
    the length of ``raw``'s (a .npy header is padded with spaces to 64 bytes)."""
    newline = raw.index(b"\n")
    line = header[:header.index(b"\n")].rstrip(b" ")
    assert len(line) <= newline, "the header has no room for the new shape"
    return line + b" " * (newline - len(line)) + header[header.index(b"\n"):]


# --- accelerator and model configs ------------------------------------------------------

def _config_json(change):
    d = json.loads(preset("zcu102").to_json())
    change(d)
    return json.dumps(d)


@pytest.mark.parametrize("text, message", [
    (preset("zcu102").to_json()[:40], r"not JSON \(Expecting"),
    ("[1, 2]", r"an accelerator config must be an object"),
    (_config_json(lambda d: d.update(bogus=1)), r"unknown AcceleratorConfig field 'bogus'"),
    (_config_json(lambda d: d["axi"].update(bogus=1)), r"unknown AxiPorts field 'axi.bogus'"),
    (_config_json(lambda d: d["axi"].update(data_bits="wide")),
     r"axi.data_bits must be an integer in \[64, 1024\], not 'wide'"),
    (_config_json(lambda d: d.update(watchdog=float("nan"))),
     r"watchdog must be an integer in \[16, 2147483647\], not nan"),
    (_config_json(lambda d: d.update(watchdog=1000.5)), r"watchdog must be an integer"),
    (_config_json(lambda d: d["linear"].update(pi=1 << 40)),
     r"linear.pi must be an integer in \[1, 64\], not 1099511627776"),
])
def test_accelerator_config_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.json: {message}"):
        AcceleratorConfig.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t[:30], r"not JSON"),
    (lambda t: json.dumps(dict(json.loads(t), bogus=1)), r"unknown ModelConfig field 'bogus'"),
    (lambda t: json.dumps(dict(json.loads(t), depth="deep")),
     r"depth must be an integer in \[1, 64\], got 'deep'"),
    (lambda t: json.dumps(dict(json.loads(t), depth=1 << 40)), r"depth must be an integer"),
])
def test_model_config_files(tmp_path, change, message):
    path = tmp_path / "model.json"
    path.write_text(change(CFG.to_json()))
    with pytest.raises(ValueError, match=f"model.json: {message}"):
        ModelConfig.load(path)


def test_a_config_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"binary.json: cannot read"):
        AcceleratorConfig.load(path)


# --- weight files -----------------------------------------------------------------------

def _weights_npz(files, tmp_path, change):
    members = {k: _npy(v) for k, v in files["weights"].items()}
    change(members, files["weights"])
    return _npz(tmp_path / "w.npz", members)


def _set(name, value):
    return lambda members, weights: members.update({name: _npy(value(weights[name]))})


def _with_nan(value):
    value = value.copy()
    value.flat[0] = np.nan
    return value


@pytest.mark.parametrize("change, message", [
    (_set(FIRST, lambda v: v.astype(np.complex64)),
     f"tensor '{FIRST}' has dtype complex64, expected integers or floats"),
    (_set(FIRST, lambda v: np.full(v.shape, "a")), f"tensor '{FIRST}' has dtype <U1"),
    (_set(FIRST, _with_nan), f"tensor '{FIRST}' holds NaN or inf"),
    (_set(FIRST, lambda v: np.where(v > 0, np.inf, v)), f"tensor '{FIRST}' holds NaN or inf"),
    (_set(FIRST, lambda v: v.reshape(-1)[:-1]), f"tensor '{FIRST}' has shape \\(24575,\\)"),
    (_set(FIRST, lambda v: v.astype(np.int8)), f"tensor '{FIRST}' has dtype int8, expected a float"),
    (lambda m, w: m.update(extra=_npy(np.zeros(2))), "unexpected tensor 'extra'"),
    (lambda m, w: m.pop(FIRST), f"missing tensor '{FIRST}'"),
    (lambda m, w: m.update(payload=_npy(np.array([{"a": 1}], dtype=object))),
     "member 'payload' holds a pickled object array"),
    (lambda m, w: m.update({FIRST: _same_length(_npy(w[FIRST]), _npy(w[FIRST]).replace(
        b"(32, 3, 16, 16)", b"(1099511627776,)"))}),
     f"tensor '{FIRST}' has shape \\(1099511627776,\\)"),
])
def test_weight_npz_files(files, tmp_path, change, message):
    path = _weights_npz(files, tmp_path, change)
    with pytest.raises(ValueError, match=f"w.npz: {message}"):
        read_weights(path, CFG)


def test_truncated_weight_files(files, tmp_path):
    for name in ("w.npz", "w.safetensors"):
        raw = (files["dir"] / name).read_bytes()
        (tmp_path / name).write_bytes(raw[:len(raw) // 2])
        with pytest.raises(ValueError, match=f"{name}: not a readable"):
            read_weights(tmp_path / name, CFG)
    shutil.copytree(files["dir"] / "edge", tmp_path / "edge")
    first = sorted((tmp_path / "edge").glob("*.bin"))[0]
    first.write_bytes(first.read_bytes()[:-3])
    with pytest.raises(ValueError, match=f"{first.name}: 125 bytes, expected 128"):
        read_weights(tmp_path / "edge", CFG)


def test_safetensors_header_claiming_a_terabyte(files, tmp_path):
    raw = (files["dir"] / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])
    with pytest.raises(ValueError, match="w.safetensors: not a readable .safetensors file"):
        read_weights(tmp_path / "w.safetensors", CFG)


def test_non_finite_values_in_every_weight_format(files, tmp_path):
    weights = dict(files["weights"], **{FIRST: _with_nan(files["weights"][FIRST])})
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()},
              str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=f"tensor '{FIRST}' holds NaN or inf"):
        read_weights(tmp_path / "w.safetensors", CFG)
    shutil.copytree(files["dir"] / "edge", tmp_path / "edge")
    first = sorted((tmp_path / "edge").glob("*.bin"))[0]
    values = np.fromfile(first, np.float32)
    values[0] = np.inf
    values.tofile(first)
    with pytest.raises(ValueError, match=f"{first.name}: holds NaN or inf"):
        read_weights(tmp_path / "edge", CFG)


# --- quantized parameter sets -----------------------------------------------------------

def _qp_npz(files, tmp_path, change):
    qp = files["qp"]
    members = {k: _npy(v) for k, v in qp.tensors.items()}
    members["__config__"] = _npy(np.array(json.dumps(
        {"format": json.loads(_stored_meta(files))["format"], "config": CFG.to_dict()})))
    change(members, qp.tensors)
    return _npz(tmp_path / "qp.npz", members)


def _stored_meta(files):
    with np.load(files["dir"] / "qp.npz", allow_pickle=False) as f:
        return str(f["__config__"])


WEIGHT = "patch_embed.weight"


@pytest.mark.parametrize("change, message", [
    (_set(WEIGHT, lambda v: v.astype(np.int32) * 1000),
     rf"tensor '{WEIGHT}' has values in \[-127000, 127000\], outside int8 \[-128, 127\]"),
    (_set(WEIGHT, lambda v: v.astype(np.float32)), rf"tensor '{WEIGHT}' has dtype float32, "
                                                   r"expected integers in int8"),
    (_set("residual.scale", lambda v: np.array(np.nan)),
     r"tensor 'residual.scale' must hold finite floats"),
    (lambda m, t: m.update(bogus=_npy(np.zeros(1))), r"unexpected tensor 'bogus'"),
    (lambda m, t: m.pop(WEIGHT), rf"missing tensor '{WEIGHT}'"),
    (lambda m, t: m.update(__config__=_npy(np.array("{not json"))), r"__config__: Expecting"),
    (lambda m, t: m.update(__config__=_npy(np.array([{"a": 1}], dtype=object))),
     r"not a quantized parameter set \(member '__config__' must be one string"),
    (lambda m, t: m.update(payload=_npy(np.array([{"a": 1}], dtype=object))),
     r"member 'payload' holds a pickled object array"),
    (lambda m, t: m.update({WEIGHT: _same_length(_npy(t[WEIGHT]), _npy(t[WEIGHT]).replace(
        str(t[WEIGHT].shape).encode(), b"(1099511627776,)"))}),
     rf"tensor '{WEIGHT}' has shape \(1099511627776,\)"),
    (lambda m, t: m.pop("__config__"), r"not a quantized parameter set \(no __config__\)"),
])
def test_quantized_parameter_files(files, tmp_path, change, message):
    path = _qp_npz(files, tmp_path, change)
    with pytest.raises(ValueError, match=f"qp.npz: {message}"):
        QuantParams.load(path)


def test_truncated_quantized_parameter_file(files, tmp_path):
    raw = (files["dir"] / "qp.npz").read_bytes()
    (tmp_path / "qp.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="qp.npz: not a quantized parameter set"):
        QuantParams.load(tmp_path / "qp.npz")


# --- compiled programs ------------------------------------------------------------------

def _damaged_folder(files, tmp_path, name, damage):
    folder = tmp_path / "compiled"
    shutil.copytree(files["dir"] / "compiled", folder)
    path = folder / name
    damage(path)
    return folder


def _json_edit(change):
    def damage(path):
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    return damage


def _flip_first_byte(path):
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name, damage, message", [
    ("program.bin", lambda p: p.write_bytes(p.read_bytes()[:-5]),
     r"program: \d+ bytes, the header lists \d+ words"),
    ("program.bin", _flip_first_byte, r"program: magic 0x544956B2, expected 0x5449564D"),
    ("manifest.json", lambda p: p.write_text(p.read_text()[:50]), r"manifest.json: not JSON"),
    ("manifest.json", _json_edit(lambda m: m["regions"]["program"].update(size=1 << 40)),
     r"region 'program' \[\d+, 1099\d+\) runs past the image's \d+ bytes"),
    ("manifest.json", _json_edit(lambda m: m.update(align="x")),
     r"manifest.json: missing or malformed entry"),
    ("manifest.json", _json_edit(lambda m: m.pop("regions")),
     r"manifest.json: missing or malformed entry 'regions'"),
    ("manifest.json", _json_edit(lambda m: m.update(format=99)), r"format 99, expected"),
    ("dram.bin", lambda p: p.write_bytes(p.read_bytes()[:100]),
     r"dram.bin: SHA-256 differs from the manifest's"),
])
def test_compiled_model_folders(files, tmp_path, name, damage, message):
    folder = _damaged_folder(files, tmp_path, name, damage)
    with pytest.raises(ValueError, match=message):
        CompiledModel.load(folder)


# --- pickles never run ------------------------------------------------------------------

class _Payload:
    """Unpickling this writes a marker file: proof that pickled code ran."""
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_runs_pickled_code(files, tmp_path):
    _Payload.marker = tmp_path / "ran"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload()
    members = {k: _npy(v) for k, v in files["weights"].items()}
    raw = io.BytesIO()                   # an object .npy as numpy writes one: a pickle
    np.lib.format.write_array_header_1_0(raw, {"descr": "|O", "fortran_order": False,
                                               "shape": (1,)})
    pickle.dump(evil, raw, protocol=3)
    members["payload"] = raw.getvalue()
    _npz(tmp_path / "w.npz", members)
    with pytest.raises(ValueError, match="pickled object array"):
        read_weights(tmp_path / "w.npz", CFG)
    with pytest.raises(ValueError, match="pickled object array"):
        QuantParams.load(_npz(tmp_path / "qp.npz", dict(
            {k: _npy(v) for k, v in files["qp"].tensors.items()},
            __config__=_npy(np.array(_stored_meta(files))), payload=raw.getvalue())))
    assert not _Payload.marker.exists()


# --- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["compile", "{d}/qp.npz", "--config", "{d}/bad.json", "-o", "{d}/c"],
     "bad.json: not JSON"),
    (["compile", "{d}/qp.npz", "--config", "{d}/unknown.json", "-o", "{d}/c"],
     "unknown.json: unknown AcceleratorConfig field 'bogus'"),
    (["import", "{d}/w.npz", "-o", "{d}/x.npz", "--model", "{d}/bad.json"],
     "bad.json: not JSON"),
    (["run", "{d}/compiled", "--images", "{d}/qp.npz"],
     "qp.npz: expected a picture (.png, .jpg, .jpeg, .bmp, .ppm), a folder of them or an .npy"),
])
def test_command_line_names_the_bad_file_in_one_line(files, capsys, argv, message):
    d = files["dir"]
    (d / "bad.json").write_text("{truncated")
    (d / "unknown.json").write_text(_config_json(lambda c: c.update(bogus=1)))
    assert main([a.format(d=d) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message.format(d=d) in err
