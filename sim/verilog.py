"""Emit Verilog for a ``wiring.Component``, one build directory per design and parameter set.

The file is rewritten only when its text changes, so simulator builds that
depend on it (Verilator's make) cost nothing when nothing changed.
"""

from amaranth.back import verilog

from .waves import BUILD_DIR

__all__ = ["design_dir", "write_if_changed", "emit_verilog"]


def design_dir(design, params):
    """``build/sim/<design>/<k1>-<v1>_<k2>-<v2>...``: where one configuration's files live."""
    key = "_".join(f"{k}-{v}" for k, v in sorted(params.items())) or "default"
    path = BUILD_DIR / "sim" / design / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it already holds exactly that; return whether it wrote."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def emit_verilog(component, path, name="top"):
    """Convert ``component`` to Verilog (no source attributes: reproducible text) at ``path``."""
    write_if_changed(path, verilog.convert(component, name=name, emit_src=False))
    return path
