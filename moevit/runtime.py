"""Running compiled models: the same calls on the simulator and on the boards.

::

    from moevit.runtime import open_target
    session = open_target("sim", preset("zcu102"))     # or "zcu102" (PYNQ), "u280" (XRT)
    compiled = session.load(qp)                         # a QuantParams, CompiledModel or folder
    frames = session.run(images, task=0)                # Frame per image
    frames[0].output, frames[0].cycles, frames[0].error

Every target runs the driver sequence of :mod:`moevit.driver` (arguments, ap_start,
wait for ap_done, status registers) on one DRAM image holding the compiled model,
then one input and one output slot per image:

``sim``
    The RTL top in Verilator (:func:`sim.frame.run_verilator`: the image is loaded
    through the simulated memory's backdoor, no Python runs per cycle; the build is
    cached per config). Needs the checkout's ``sim/`` and a C++ compiler.
``zcu102``
    PYNQ on the board: ``overlay`` is the ``.bit`` of the deployment tree
    (:mod:`moevit.deploy`, with its ``.hwh`` beside it); the image goes into one
    ``pynq.allocate`` buffer, the registers are the IP's MMIO.
``u280``
    XRT through ``pyxrt``: ``xclbin`` from the deployment tree; one buffer object
    in the kernel's memory bank, the registers through ``xrt::kernel``'s register
    access (exclusive CU context).

Board targets import their libraries only when opened and fail with one line
naming what is missing. Compilation is cached by content hash
(:func:`moevit.compiler.model_hash`) in memory and, with ``cache_dir``, on disk.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden.int_model import QuantParams, pixels_from_image
from rtl.config import AcceleratorConfig, preset

from .compiler import CompiledModel, compile_model, model_hash
from .driver import error_name, execute, run_sequence

__all__ = ["TARGETS", "TargetError", "Frame", "Session", "open_target", "as_pixels"]

#: Targets of :func:`open_target`: name -> what runs the frames.
TARGETS = {"sim": "the RTL top in Verilator",
           "zcu102": "a ZCU102 with the PYNQ overlay of the deployment tree",
           "u280": "an Alveo U280 with the xclbin of the deployment tree (XRT)"}


class TargetError(RuntimeError):
    """A target cannot be opened or used; the message names what is missing."""


@dataclass
class Frame:
    """One image's run.

    Members
    -------
    output : numpy.ndarray
        int16 backbone tokens (N, D), or class logits (C,) of a classifier.
    cycles : int
        ap_start to ap_done, from the cycle-counter register.
    error : str
        The error register's name (``"none"`` when the frame completed).
    busy : dict {engine: int}
        Busy cycles per engine.
    wall_s : float
        Host wall-clock seconds from ap_start to ap_done (the simulator's speed on ``sim``).
    """

    output: np.ndarray
    cycles: int
    error: str
    busy: dict = field(default_factory=dict)
    wall_s: float = 0.0


def as_pixels(cfg, image):
    """uint8 pixel codes (C, H, W) of an image given as uint8 codes or as floats in [0, 1)."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        expected = (cfg.in_chans, *cfg.image_size)
        if image.shape != expected:
            raise ValueError(f"image must have shape {expected}, got {image.shape}")
        if image.min() < 0 or image.max() > 255:
            raise ValueError("integer images must hold pixel codes in [0, 255]")
        return image.astype(np.uint8)
    return pixels_from_image(cfg, image)


class Session:
    """An open target (see the module docstring); use :func:`open_target`."""

    def __init__(self, target, config, backend, cache_dir=None, timeout=None):
        self.target, self.config, self.backend = target, config, backend
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.timeout = timeout
        self.compiled = None
        self._memo = {}

    def load(self, model):
        """Make ``model`` the one :meth:`run` runs: a :class:`~golden.int_model.QuantParams`
        (compiled for the session's config, cached by content hash), a
        :class:`~moevit.compiler.CompiledModel` or the folder of one. Returns the
        :class:`~moevit.compiler.CompiledModel`."""
        if isinstance(model, (str, Path)):
            model = CompiledModel.load(model)
        if isinstance(model, QuantParams):
            model = self._compile(model)
        if not isinstance(model, CompiledModel):
            raise TypeError(f"model must be a QuantParams, a CompiledModel or a folder, "
                            f"got {type(model).__name__}")
        if model.config != self.config:
            raise TargetError(f"the model was compiled for config {model.config.name!r}, "
                              f"this {self.target} target runs {self.config.name!r} "
                              f"(a different AcceleratorConfig)")
        self.compiled = model
        return model

    def _compile(self, qp):
        key = model_hash(qp, self.config)
        if key in self._memo:
            return self._memo[key]
        folder = self.cache_dir / key[:16] if self.cache_dir else None
        compiled = None
        if folder is not None and (folder / "manifest.json").is_file():
            compiled = CompiledModel.load(folder)
            if compiled.source_hash != key:         # a 64-bit prefix collision or a stale folder
                compiled = None
        if compiled is None:
            compiled = compile_model(qp, self.config)
            if folder is not None:
                compiled.save(folder)
        self._memo[key] = compiled
        return compiled

    def run(self, images, task=0):
        """Run one frame per image: ``images`` is one image or a sequence (each (C, H, W),
        uint8 codes or floats in [0, 1)); ``task`` an int or one per image. Returns a list
        of :class:`Frame`."""
        if self.compiled is None:
            raise TargetError("no model loaded: call load() first")
        m = self.compiled.model
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        pixels = [as_pixels(m, im) for im in images]
        if not pixels:
            raise ValueError("images must hold at least one image")
        tasks = list(task) if isinstance(task, (list, tuple)) else [task] * len(pixels)
        if len(tasks) != len(pixels):
            raise ValueError(f"task has {len(tasks)} entries for {len(pixels)} images")
        for t in tasks:
            if not isinstance(t, (int, np.integer)) or not 0 <= t < m.num_tasks:
                raise ValueError(f"task must be in [0, {m.num_tasks - 1}], got {t!r}")
        return self.backend.run(self.compiled, list(zip(pixels, map(int, tasks))),
                                self.timeout)


# ------------------------------------------------------------------------ backends

class _Simulator:
    def __init__(self, log_dir=None):
        self.log_dir = log_dir

    def run(self, compiled, runs, timeout):
        from sim.frame import run_verilator
        try:
            results, _ = run_verilator(compiled, runs, timeout=timeout, log_dir=self.log_dir)
        except AssertionError as exc:           # the runner's report of a failed build or run
            raise TargetError(f"the simulation failed: {str(exc).splitlines()[0]}") from None
        return [Frame(r.output, r.cycles, error_name(r.error),
                      {k: v for k, v in r.busy.items() if k != "wall_s"}, r.busy["wall_s"])
                for r in results]


def _read_output(compiled, raw):
    image = compiled.image.copy()
    image.write(image.region("output").offset, raw)
    return compiled.read_output(image)


def _board_library(name, target, hint):
    try:
        return __import__(name)
    except ImportError:
        raise TargetError(f"target {target!r} needs {hint}") from None


def _deployment(path, target, what):
    if path is None or not Path(path).is_file():
        raise TargetError(f"target {target!r} needs the {what} of `moevit deploy --board "
                          f"{target}` (got {path!r})")
    return str(path)


class _Board:
    """One DRAM buffer holding the batch image, the driver sequence per frame. Subclasses
    give ``registers`` (``read``, ``write``), ``clock_hz`` and the buffer operations."""

    def run(self, compiled, runs, timeout):
        image, slots = compiled.batch(runs)
        base = self._upload(bytes(image.data))
        size = compiled.image.region("output").size
        frames = []
        try:
            for arguments in slots:
                args = {k: (v + base if k in ("program", "model", "input", "output") else v)
                        for k, v in arguments.items()}
                t0 = time.perf_counter()
                status = execute(run_sequence(args, timeout or 1 << 31), self.registers,
                                 clock_hz=self.clock_hz)
                wall = time.perf_counter() - t0
                raw = self._download(arguments["output"], size)
                frames.append(Frame(_read_output(compiled, raw), status.cycles, status.error,
                                    status.busy, wall))
        finally:
            self._release()
        return frames


class _Pynq(_Board):
    """ZCU102 with PYNQ: ``overlay`` the ``.bit`` (its ``.hwh`` beside it); the registers
    are the IP's MMIO, the image one ``pynq.allocate`` buffer."""

    def __init__(self, overlay, clock_hz, ip_name="moevit_0"):
        self.pynq = _board_library("pynq", "zcu102", "PYNQ: run on the board's PYNQ image "
                                                     "(pip install pynq there)")
        self.overlay = self.pynq.Overlay(_deployment(overlay, "zcu102", "overlay .bit"))
        if not hasattr(self.overlay, ip_name):
            raise TargetError(f"{overlay}: the overlay has no IP named {ip_name!r}")
        self.registers = getattr(self.overlay, ip_name).mmio
        self.clock_hz = clock_hz

    def _upload(self, data):
        self.buf = self.pynq.allocate(shape=(len(data),), dtype=np.uint8)
        self.buf[:] = np.frombuffer(data, np.uint8)
        self.buf.flush()
        return self.buf.device_address

    def _download(self, offset, size):
        self.buf.invalidate()
        return bytes(self.buf[offset:offset + size])

    def _release(self):
        self.buf.freebuffer()


class _XrtRegisters:
    def __init__(self, kernel):
        self.kernel = kernel

    def read(self, offset):
        return self.kernel.read_register(offset)

    def write(self, offset, word):
        self.kernel.write_register(offset, word)


class _Xrt(_Board):
    """Alveo U280 with XRT (``pyxrt``): ``xclbin`` from the deployment tree; the registers
    through ``xrt::kernel``'s register access (exclusive CU), the image one buffer object
    in the bank of the kernel's first argument."""

    def __init__(self, xclbin, device, clock_hz, kernel="moevit"):
        self.pyxrt = _board_library("pyxrt", "u280", "XRT's Python binding pyxrt (source "
                                                     "/opt/xilinx/xrt/setup.sh)")
        path = _deployment(xclbin, "u280", ".xclbin")
        self.device = self.pyxrt.device(device)
        uuid = self.device.load_xclbin(path)
        self.kernel = self.pyxrt.kernel(self.device, uuid, kernel,
                                        self.pyxrt.kernel.cu_access_mode.exclusive)
        self.registers = _XrtRegisters(self.kernel)
        self.clock_hz = clock_hz

    def _upload(self, data):
        pyxrt = self.pyxrt
        self.bo = pyxrt.bo(self.device, len(data), pyxrt.bo.flags.normal,
                           self.kernel.group_id(0))
        self.bo.write(np.frombuffer(data, np.uint8), 0)
        self.bo.sync(pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, len(data), 0)
        return self.bo.address()

    def _download(self, offset, size):
        self.bo.sync(self.pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, size, offset)
        return bytes(np.asarray(self.bo.read(size, offset), np.int8).view(np.uint8))

    def _release(self):
        del self.bo


def open_target(target="sim", config=None, *, overlay=None, xclbin=None, device=0,
                cache_dir=None, timeout=None, log_dir=None, clock_mhz=300):
    """Open ``target`` (:data:`TARGETS`) running ``config`` (an
    :class:`~rtl.config.AcceleratorConfig` or a preset name; default: the preset of the
    board, ``zcu102`` for the simulator); on a board it must be the config the bitstream
    was built for. ``overlay`` (zcu102) / ``xclbin`` (u280): the built deployment;
    ``timeout``: cycles per frame before the driver gives up (default: the simulator's,
    or 2**31 on a board), converted to seconds at ``clock_mhz`` (the kernel clock of the
    deployment); ``log_dir``: the simulator's build logs."""
    if target not in TARGETS:
        raise TargetError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if config is None:
        config = preset("zcu102" if target == "sim" else target)
    elif isinstance(config, str):
        config = preset(config)
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig or a preset name, "
                        f"got {type(config).__name__}")
    if target == "sim":
        backend = _Simulator(log_dir)
    elif target == "zcu102":
        backend = _Pynq(overlay, clock_mhz * 1e6)
    else:
        backend = _Xrt(xclbin, device, clock_mhz * 1e6)
    return Session(target, config, backend, cache_dir=cache_dir, timeout=timeout)
