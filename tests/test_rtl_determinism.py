"""The same config elaborates to byte-identical Verilog: in two interpreters with different
hash seeds, one of them on a second copy of the sources in another folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The whole ECP5 accelerator top and two units with memories and enums.
DESIGNS = ["accelerator_ecp5_85f", "gating_e16_k2", "layernorm_192x4"]
_DIGESTS = """
import hashlib, sys
from amaranth.back import verilog
from rtl.units import UNITS
for name in sys.argv[1:]:
    text = verilog.convert(UNITS[name](), name="top", emit_src=False)
    print(name, hashlib.sha256(text.encode()).hexdigest(), len(text))
"""


def _digests(root, hash_seed):
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _DIGESTS, *DESIGNS], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=True)
    return done.stdout.splitlines()


def test_verilog_is_byte_identical_across_runs_and_checkouts(tmp_path):
    copy = tmp_path / "second_checkout"
    for folder in ("rtl", "golden"):
        shutil.copytree(ROOT / folder, copy / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "models"))
    first = _digests(ROOT, 1)
    assert len(first) == len(DESIGNS) and all(int(line.split()[2]) > 1000 for line in first)
    assert _digests(copy, 2) == first
