"""Where waveforms go, and whether to write them.

Set ``WAVES=1`` to dump waveforms for every simulation. Without it, a failing
simulation is re-run once with waveforms on, and the failure names the file.
"""

import os
import re
from pathlib import Path

__all__ = ["BUILD_DIR", "waves_requested", "waves_dir"]

#: Root of every generated file (Verilog, simulator builds, waveforms, reports).
BUILD_DIR = Path(os.environ.get("MOEVIT_BUILD_DIR", Path(__file__).resolve().parent.parent / "build"))


def waves_requested():
    return os.environ.get("WAVES", "0") not in ("", "0")


def waves_dir(name):
    """A directory for the waveforms of the simulation called ``name``."""
    path = BUILD_DIR / "waves" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path.mkdir(parents=True, exist_ok=True)
    return path
