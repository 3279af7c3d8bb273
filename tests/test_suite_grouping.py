"""The suite's own plumbing: under ``make test`` (pytest-xdist, ``--dist loadgroup``) the
tests of one ``xdist_group`` run on one worker, so a session fixture they share (a whole
simulation, a Verilator build) is set up once. pytest 9.2 broke this silently
(pytest-dev/pytest-xdist#1386) and the suite ran the pysim fault simulation twice."""

import os
import subprocess
import sys
import textwrap


def test_an_xdist_group_runs_on_one_worker_and_sets_its_fixture_up_once(tmp_path):
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import os
        import pytest

        @pytest.fixture(scope="session")
        def shared(tmp_path_factory):
            with open(os.environ["SETUP_LOG"], "a") as log:
                log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

        GROUP = pytest.mark.xdist_group("shared")

        @GROUP
        @pytest.mark.parametrize("n", range(4))
        def test_grouped(shared, n):
            pass

        @pytest.mark.parametrize("n", range(8))
        def test_free(n):
            pass
    """))
    log = tmp_path / "setups.log"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", "-o", "addopts=", "test_grouped.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "SETUP_LOG": str(log)})
    assert run.returncode == 0, run.stdout[-2000:]
    workers = {line.split("]")[0] for line in run.stdout.splitlines()
               if "PASSED" in line and "test_grouped[" in line}
    assert len(workers) == 1, run.stdout[-2000:]
    assert len(log.read_text().split()) == 1
