"""The moevit command line: from a trained checkpoint to frames on a target.

::

    moevit import SOURCE -o weights.npz            # Edge-MoE folder, .pt/.pth, .safetensors, .npz
    moevit quantize weights.npz --calib IMAGES -o quant.npz [--method dual_stage]
    moevit compile quant.npz --board zcu102 -o compiled/
    moevit run compiled/ --target sim --images IMAGES [--check] [--json run.json]
    moevit report compiled/ --board zcu102 -o report.html [--rtl run.json] [--weights ...]
    moevit dse quant.npz --board u280 -o dse/           # the fastest config that fits
    moevit deploy --board u280 -o deploy/u280/

Every error is one line on stderr naming the file, tensor or option and what was
expected, with exit code 2 (``--debug`` shows the traceback). Long steps show
progress (rich). Also reachable as ``python -m moevit``.
"""

import argparse
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, track
from rich.table import Table

from golden.softmax import ATTENTION_CODES

__all__ = ["main"]

_MHZ = 300


class UsageError(ValueError):
    """A bad option combination (reported like every other error)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``moevit: error: ...``, exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _console():
    return Console(stderr=True, width=None if sys.stderr.isatty() else 110)


def _spinner(console):
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def _model_config(args, stored=None):
    """The ModelConfig: ``--model`` (a preset name or a JSON file), else ``stored``, else
    M3ViT-tiny."""
    from golden.config import ModelConfig, preset
    if args.model is None:
        return stored or preset("m3vit_tiny")
    path = Path(args.model)
    if path.suffix == ".json":
        if not path.is_file():
            raise UsageError(f"--model {path}: no such file")
        return ModelConfig.load(path)
    return preset(args.model)


def _stored_config(path):
    """The model config stored in a weight ``.npz`` (None if it has none)."""
    from golden.config import ModelConfig
    from golden.archive import read_string
    try:
        text = read_string(path, "__config__")
        return None if text is None else ModelConfig.from_json(text)
    except ValueError:
        return None       # the reader that follows names the problem


def _accelerator_config(args, model=None):
    """``--board`` (a preset name) or ``--config`` (a JSON file); ``--fit``: capacity fitted
    to ``model``."""
    from rtl.config import AcceleratorConfig, preset
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise UsageError(f"--config {path}: no such file")
        config = AcceleratorConfig.load(path)
    else:
        config = preset(args.board or "zcu102")
    if getattr(args, "fit", False):
        if model is None:
            raise UsageError("--fit needs a model")
        config = config.fitted(model)
    return config


def _load_quant(path):
    from golden.int_model import QuantParams
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected a quantized parameter set, "
                         f"from `moevit quantize`)")
    try:
        return QuantParams.load(path)
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        text = str(exc)
        raise UsageError(text if text.startswith(str(path)) else
                         f"{path}: not a quantized parameter set ({text})") from None


def _load_model(path, args, console):
    """A CompiledModel from a compiled folder, or compiled now from a quantized ``.npz``."""
    from moevit.compiler import CompiledModel, compile_model
    path = Path(path)
    if path.is_dir():
        compiled = CompiledModel.load(path)
        if args.config or args.fit or (args.board and args.board != compiled.config.name):
            raise UsageError(f"{path} was compiled for config {compiled.config.name!r}; "
                             f"--board/--config/--fit apply to a quantized .npz only")
        return compiled, None
    qp = _load_quant(path)
    config = _accelerator_config(args, qp.config)
    with _spinner(console) as progress:
        progress.add_task(f"compiling {qp.config.name} for {config.name}", total=None)
        return compile_model(qp, config), qp


# ------------------------------------------------------------------------ sub-commands

def cmd_import(args, console):
    from golden.weights import save_npz
    from moevit.checkpoints import detect_format, read_weights
    fmt = args.format or detect_format(args.source)
    stored = _stored_config(args.source) if fmt == "npz" else None
    cfg = _model_config(args, stored)
    with _spinner(console) as progress:
        progress.add_task(f"reading {args.source} ({fmt})", total=None)
        weights = read_weights(args.source, cfg, fmt, prefix=args.prefix)
    out = Path(args.output)
    if out.suffix != ".npz":
        raise UsageError(f"-o {out}: the output must be a .npz file")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(out, weights, cfg)
    count = sum(v.size for v in weights.values())
    print(f"{out}: {len(weights)} tensors, {count:,} parameters of model {cfg.name} "
          f"(from {fmt})")


def cmd_quantize(args, console):
    from golden.ptq import calibrate
    from golden.weights import load_npz
    from moevit.image_files import load_inputs
    source = Path(args.weights)
    if not source.is_file():
        raise UsageError(f"{source}: no such file (expected a weight set from `moevit import`)")
    cfg = _model_config(args, _stored_config(source))
    weights = load_npz(source, cfg)
    images = load_inputs(args.calib, cfg, args.limit)

    def progress(iterable, description):
        return track(iterable, description=description, console=console, transient=True,
                     disable=not console.is_terminal)

    t0 = time.perf_counter()
    qp = calibrate(cfg, weights, images, args.method, attention=args.attention, task=args.task,
                   progress=progress)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    qp.save(out)
    print(f"{out}: {cfg.name} quantized ({args.method}, {args.attention} attention codes, W8A8) "
          f"on {len(images)} calibration image(s) in {time.perf_counter() - t0:.1f} s")


def cmd_compile(args, console):
    from moevit.compiler import compile_model
    from moevit.executor import execute
    from moevit.schedule import schedule
    qp = _load_quant(args.quant)
    config = _accelerator_config(args, qp.config)
    with _spinner(console) as progress:
        progress.add_task(f"compiling {qp.config.name} for {config.name}", total=None)
        compiled = compile_model(qp, config)
        compiled.save(args.output)
        progress.add_task("schedule model of a blank frame", total=None)
        blank = np.zeros((qp.config.in_chans, *qp.config.image_size), np.uint8)
        cycles = schedule(config, execute(compiled, blank, 0)[1]).cycles
    table = Table(title=f"{args.output}: {qp.config.name} for {config.name}")
    for col in ("region", "offset", "bytes"):
        table.add_column(col, justify="right" if col != "region" else "left")
    regions = compiled.memory_map()
    named = {k: v for k, v in regions.items() if k in ("pos_embed", "program", "input", "output")}
    for name, r in named.items():
        table.add_row(name, f"0x{r['offset']:08X}", f"{r['size']:,}")
    table.add_row(f"{len(regions) - len(named)} weight images", "", f"{compiled.weight_bytes:,}")
    Console(width=110).print(table)
    print(f"{len(compiled.program)} instructions, DRAM image {len(compiled.image.data):,} bytes; "
          f"schedule model: {cycles:,} cycles per frame (task 0, blank frame), "
          f"{_MHZ * 1e6 / cycles:,.0f} frames/s at an assumed {_MHZ} MHz")


def cmd_run(args, console):
    from moevit.image_files import load_inputs
    from moevit.runtime import as_pixels, open_target
    compiled, _ = _load_model(args.model, args, console)
    model = compiled.model
    images = load_inputs(args.images, model, args.limit)
    pixels = [as_pixels(model, im) for im in images]
    # A board runs the config its bitstream was built for: the board's preset unless
    # --config names the deployment's config.json; load() rejects a model compiled otherwise.
    target_config = compiled.config if args.target == "sim" else (
        _accelerator_config(args) if args.config else args.target)
    session = open_target(args.target, target_config, overlay=args.overlay,
                          xclbin=args.xclbin, timeout=args.timeout, clock_mhz=args.mhz,
                          log_dir=Path(args.log_dir) if args.log_dir else None)
    session.load(compiled)
    with _spinner(console) as progress:
        progress.add_task(f"{len(pixels)} frame(s) of {model.name} on {args.target} "
                          f"({compiled.config.name})", total=None)
        t0 = time.perf_counter()
        frames = session.run(pixels, args.task)
        wall = time.perf_counter() - t0
    checks = [None] * len(frames)
    if args.check:
        from moevit.executor import execute
        checks = [bool(np.array_equal(f.output, execute(compiled, p, args.task)[0]))
                  for f, p in zip(frames, pixels)]
    table = Table(title=f"{model.name} on {args.target} ({compiled.config.name}), task "
                        f"{args.task}; frames/s at an assumed {_MHZ} MHz")
    for col in ("frame", "cycles", "frames/s", "error") + (("bit-exact",) if args.check else ()):
        table.add_column(col, justify="right")
    for n, (f, ok) in enumerate(zip(frames, checks)):
        row = [str(n), f"{f.cycles:,}", f"{_MHZ * 1e6 / f.cycles:,.0f}" if f.cycles else "-",
               f.error]
        table.add_row(*(row + (["yes" if ok else "NO"] if args.check else [])))
    Console(width=110).print(table)
    print(f"{len(frames)} frame(s) in {wall:.1f} s wall")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, outputs=np.stack([f.output for f in frames]),
                 cycles=np.array([f.cycles for f in frames]),
                 errors=np.array([f.error for f in frames]))
        print(f"wrote {out}")
    if args.json:
        entries = [{"cycles": f.cycles, "error": f.error, "busy": f.busy,
                    "input_sha256": _pixels_hash(p),
                    **({"bit_exact": ok} if ok is not None else {})}
                   for f, ok, p in zip(frames, checks, pixels)]
        Path(args.json).write_text(json.dumps({"model": model.name, "config": compiled.config.name,
                                               "target": args.target, "task": args.task,
                                               "frames": entries}, indent=1) + "\n")
        print(f"wrote {args.json}")
    bad = [n for n, f in enumerate(frames) if f.error != "none"]
    if bad or (args.check and not all(checks)):
        raise UsageError(f"frames {bad or [n for n, ok in enumerate(checks) if not ok]} "
                         f"failed (error code or a mismatch with the reference executor)")


def _pixels_hash(pixels):
    """What ties a run's JSON entry to its frame (``report --rtl``)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, np.uint8).tobytes()).hexdigest()


def cmd_report(args, console):
    from golden.weights import load_npz
    from moevit.compiler import model_hash
    from moevit.image_files import load_inputs
    from moevit.report import build_report, write_html
    from moevit.runtime import as_pixels
    compiled, qp = _load_model(args.model, args, console)
    model = compiled.model
    if args.images:
        images = load_inputs(args.images, model, args.limit)
    else:
        from golden.float_model import random_image
        images = [random_image(model, seed=0)]
    pixels = as_pixels(model, images[0])
    rtl = None
    if args.rtl:
        if not args.images:
            raise UsageError("--rtl needs --images: the frame the run's first entry ran")
        if not Path(args.rtl).is_file():
            raise UsageError(f"--rtl {args.rtl}: no such file (expected `moevit run --json`)")
        try:
            data = json.loads(Path(args.rtl).read_text())
        except ValueError as exc:
            raise UsageError(f"--rtl {args.rtl}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not data.get("frames"):
            raise UsageError(f"--rtl {args.rtl}: no frames (expected `moevit run --json`)")
        if data.get("model") != model.name or data.get("config") != compiled.config.name:
            raise UsageError(f"--rtl {args.rtl}: a run of {data.get('model')} on "
                             f"{data.get('config')}, not of {model.name} on {compiled.config.name}")
        rtl = data["frames"][0]
        if data.get("task") != args.task or rtl.get("input_sha256") != _pixels_hash(pixels):
            raise UsageError(f"--rtl {args.rtl}: its first frame ran another image or task than "
                             f"the first of --images at --task {args.task}")
    if args.quant:
        qp = _load_quant(args.quant)
    if qp is not None and compiled.source_hash is not None \
            and model_hash(qp, compiled.config) != compiled.source_hash:
        raise UsageError(f"--quant {args.quant}: not the quantized set {args.model} was "
                         f"compiled from")
    weights = None
    if args.weights:
        if qp is None:
            raise UsageError("--weights needs the quantized set too: pass the model as a "
                             "quant .npz or add --quant")
        weights = load_npz(args.weights, model)
    with _spinner(console) as progress:
        progress.add_task("schedule model, plots" + (", fidelity" if weights else ""),
                          total=None)
        board = args.board or compiled.config.name
        report = build_report(compiled, pixels, args.task,
                              board=board if board in ("zcu102", "u280") else None,
                              rtl=rtl, qp=qp, weights=weights, images=images)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_html(report, out)
    print(f"{out}: {model.name} on {compiled.config.name}, {report['cycles']:,} cycles per frame")


def cmd_dse(args, console):
    from moevit.dse import Space, plot, report, search
    from moevit.image_files import load_inputs
    from moevit.runtime import as_pixels
    for name, lo, hi in (("workers", 1, 64), ("population", 2, 256), ("generations", 1, 100)):
        value = getattr(args, name)
        if not lo <= value <= hi:
            raise UsageError(f"--{name} must be in [{lo}, {hi}], not {value}")
    try:
        space = Space().restrict(args.space)
    except ValueError as exc:
        raise UsageError(f"--space {exc}") from None
    qp = _load_quant(args.quant)
    if args.images:
        image = load_inputs(args.images, qp.config, 1)[0]
    else:
        from golden.float_model import random_image
        image = random_image(qp.config, seed=0)
    with _spinner(console) as progress:
        step = progress.add_task(f"searching configs for {args.board}", total=None)
        result = search(args.board, qp, as_pixels(qp.config, image), space, seed=args.seed,
                        workers=args.workers, population=args.population,
                        generations=args.generations,
                        progress=lambda text: progress.update(step, description=text))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = report(result, args.board)
    (out / f"{args.board}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / f"{args.board}.config.json").write_text(
        json.dumps(data["config"], indent=1, sort_keys=True) + "\n")
    plot(result, args.board, out / f"{args.board}.png")
    best = result["best"]
    if not best.ok:
        raise UsageError(f"no evaluated config fits {args.board}: {best.reason}")
    print(f"{out / (args.board + '.config.json')}: {best.cycles:,} cycles per frame "
          f"({data['predicted_fps_at_300mhz']:,} frames/s at an assumed {_MHZ} MHz), "
          f"{best.resources['dsp']:,} DSPs, {best.resources['bram']:,} block RAMs "
          f"(estimates); {data['evaluated']} configs in {data['search_s']} s; use it with "
          f"--config")


def cmd_deploy(args, console):
    from moevit.deploy import deploy
    config = _accelerator_config(args)
    with _spinner(console) as progress:
        progress.add_task(f"elaborating the {config.name} accelerator for {args.board}",
                          total=None)
        files = deploy(args.board, config, args.output, mhz=args.mhz)
    for name, what in files.items():
        print(f"{Path(args.output) / name}: {what}")
    print("no bitstream was built: see README.md in the tree for the one vendor-tool command")


# ------------------------------------------------------------------------ parser

def _parser():
    from golden.config import PRESETS as MODELS
    from moevit.checkpoints import FORMATS
    from moevit.deploy import BOARDS
    from moevit.runtime import TARGETS
    from rtl.config import PRESETS
    p = _Parser(prog="moevit", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    def model_option(q):
        q.add_argument("--model", help=f"model config: a preset ({', '.join(MODELS)}) or a "
                                       f"JSON file (default: the one stored in the file, "
                                       f"else m3vit_tiny)")

    def board_options(q, fit=True):
        q.add_argument("--board", choices=sorted(PRESETS),
                       help="accelerator preset (default zcu102)")
        q.add_argument("--config", help="accelerator config JSON instead of --board")
        if fit:
            q.add_argument("--fit", action="store_true",
                           help="fit the preset's capacity to the model (for the simulator "
                                "or a new bitstream)")

    q = sub.add_parser("import", help="read a checkpoint into a validated weight .npz")
    q.add_argument("source", help="Edge-MoE weights/ folder, .pt/.pth, .safetensors, .npz")
    q.add_argument("-o", "--output", required=True, help="output .npz")
    q.add_argument("--format", choices=FORMATS, help="default: from the name")
    q.add_argument("--prefix", help="backbone key prefix of a PyTorch checkpoint "
                                    "(default: found)")
    model_option(q)
    q.set_defaults(func=cmd_import)

    q = sub.add_parser("quantize", help="post-training quantization on calibration images")
    q.add_argument("weights", help="weight .npz from `moevit import`")
    q.add_argument("--calib", required=True, help="folder of pictures, a picture or an .npy")
    q.add_argument("-o", "--output", required=True, help="output .npz (quantized set)")
    q.add_argument("--method", default="minmax", choices=("minmax", "dual_stage"))
    q.add_argument("--attention", default="log2", choices=ATTENTION_CODES)
    q.add_argument("--task", type=int, default=0, help="task whose gate routes calibration")
    q.add_argument("--limit", type=int, help="use at most this many images")
    model_option(q)
    q.set_defaults(func=cmd_quantize)

    q = sub.add_parser("compile", help="program + DRAM image + memory map for a config")
    q.add_argument("quant", help="quantized .npz from `moevit quantize`")
    q.add_argument("-o", "--output", required=True, help="output folder")
    board_options(q)
    q.set_defaults(func=cmd_compile)

    q = sub.add_parser("run", help="run frames on a target; outputs and a timing table")
    q.add_argument("model", help="compiled folder, or a quantized .npz (compiled now)")
    q.add_argument("--target", default="sim", choices=sorted(TARGETS))
    q.add_argument("--images", required=True, help="folder of pictures, a picture or an .npy")
    q.add_argument("--task", type=int, default=0)
    q.add_argument("--limit", type=int, help="run at most this many images")
    q.add_argument("--check", action="store_true",
                   help="compare each output with the reference executor (bit for bit)")
    q.add_argument("-o", "--output", help="write the outputs, cycles and errors to this .npz")
    q.add_argument("--json", help="write cycles, errors and busy counters to this JSON")
    q.add_argument("--overlay", help="zcu102: the overlay .bit")
    q.add_argument("--xclbin", help="u280: the .xclbin")
    q.add_argument("--timeout", type=int, help="cycles per frame before giving up")
    q.add_argument("--log-dir", help="sim: Verilator build and run logs here")
    q.add_argument("--mhz", type=float, default=_MHZ,
                   help="boards: the kernel clock the deployment was built for (default 300)")
    board_options(q)
    q.set_defaults(func=cmd_run)

    q = sub.add_parser("report", help="self-contained HTML report of a compiled model")
    q.add_argument("model", help="compiled folder, or a quantized .npz (compiled now)")
    q.add_argument("-o", "--output", required=True, help="output .html")
    q.add_argument("--images", help="the frame (first image) and fidelity images "
                                    "(default: a seeded test image)")
    q.add_argument("--limit", type=int, default=4, help="fidelity images (default 4)")
    q.add_argument("--task", type=int, default=0)
    q.add_argument("--rtl", help="`moevit run --json` output of the same model and config")
    q.add_argument("--weights", help="float weight .npz: adds the fidelity section")
    q.add_argument("--quant", help="quantized .npz of a compiled folder (for --weights)")
    board_options(q)
    q.set_defaults(func=cmd_report)

    q = sub.add_parser("dse", help="search the fastest accelerator config that fits a board")
    q.add_argument("quant", help="quantized .npz from `moevit quantize`")
    q.add_argument("--board", required=True, choices=("u280", "ulx3s", "zcu102"))
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--images", help="the frame the cycles are measured on (default: a "
                                    "seeded test image)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=2, help="parallel evaluations")
    q.add_argument("--population", type=int, default=12,
                   help="genomes per generation of stage 1 (2..256; default 12)")
    q.add_argument("--generations", type=int, default=6,
                   help="generations of stage 1 (1..100; default 6); stage 2's local moves "
                        "start from its winner, so a short stage 1 can lengthen stage 2")
    q.add_argument("--space", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="search FIELD over these values only (one value pins it); "
                        "repeatable. Fields: p, t, r, norm_lanes, bank_words, "
                        "burst_beats, outstanding.")
    q.set_defaults(func=cmd_dse)

    q = sub.add_parser("deploy", help="Vivado / Vitis build tree of a board (no vendor tools "
                                      "needed to generate it)")
    q.add_argument("--board", required=True, choices=sorted(BOARDS))
    q.add_argument("--config", help="accelerator config JSON (default: the board's preset)")
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--mhz", type=int, default=_MHZ, help="kernel clock (default 300)")
    q.set_defaults(func=cmd_deploy)
    return p


def main(argv=None):
    """Entry point of the ``moevit`` script; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:          # --help (0) or a usage error (2, one line printed)
        return exit_.code
    console = _console()
    try:
        args.func(args, console)
    except (ValueError, OSError, KeyError, RuntimeError, TypeError, EOFError,
            zipfile.BadZipFile, ImportError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"moevit {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
