"""Shared pytest configuration: the repository root is importable (see pyproject's pythonpath).

Under pytest-xdist (``make test`` runs one worker per core) each worker builds its
simulators in its own folder, ``build/workers/<worker>/`` (``MOEVIT_BUILD_DIR``), so two
workers never compile or run the same Verilator model in one folder at once.
"""

import os
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:     # set before any test imports sim.waves, which reads it once
    _BASE = Path(os.environ.get("MOEVIT_BUILD_DIR", Path(__file__).resolve().parent.parent / "build"))
    os.environ["MOEVIT_BUILD_DIR"] = str(_BASE / "workers" / _WORKER)
