"""moevit: the host side of the MoE-ViT accelerator (compiler, runtime, command line).

The package runs from the repository checkout (``pip install -e .``): it uses the
checkout's ``golden/`` (the numpy spec), ``rtl/`` (configs, instruction set, the
top for the simulator and deployment trees), ``sim/`` and ``platforms/``. Those
folders are not installed into site-packages; the checkout's root is put on
``sys.path`` here so that the ``moevit`` script works from any directory.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
