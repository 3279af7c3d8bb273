"""Reading ``.npz`` archives of numeric tensors safely: no pickles, no absurd allocations.

``numpy.load(allow_pickle=False)`` already refuses object arrays, but it trusts each
member's header: a file whose header claims ``2**40`` elements makes it try to allocate
terabytes. :func:`read_npz` reads every member's header first and checks it against
what the caller expects (names, shapes, no object dtype, a bounded string for the
config entry) before any array is read.
"""

import zipfile

import numpy as np

__all__ = ["ArchiveError", "read_npz", "read_string"]

#: Longest string member (the config JSON) read from an archive, in characters.
MAX_STRING = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot be read as the expected tensors; the message names the file."""


def _headers(path):
    """``{member name: (shape, dtype)}`` from the ``.npy`` headers alone."""
    headers = {}
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise ArchiveError(f"{path}: a .npy array, expected an .npz archive")
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
                headers[name] = (tuple(shape), np.dtype(dtype))
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable .npz archive ({exc})") from None
    return headers


def _check_string(path, name, shape, dtype):
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > MAX_STRING:
        raise ArchiveError(f"{path}: member {name!r} must be one string of at most "
                           f"{MAX_STRING} characters, not {dtype} of shape {shape}")


def read_string(path, name):
    """The string member ``name`` of the ``.npz`` at ``path`` (None if there is none),
    read without reading the other members."""
    header = _headers(path).get(name)
    if header is None:
        return None
    _check_string(path, name, *header)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as member:
            return str(np.lib.format.read_array(member, allow_pickle=False))
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable .npz archive ({exc})") from None


def read_npz(path, shapes, strings=(), context=""):
    """The arrays of the ``.npz`` at ``path``, after checking every member's header.

    Parameters
    ----------
    shapes : dict of str to tuple
        The numeric members allowed and their shapes; a member may be missing (the
        caller names missing tensors), not unexpected or of another shape.
    strings : iterable of str
        Members that hold one string (a config JSON), at most :data:`MAX_STRING` long.
    context : str
        Appended to a shape error (``" for config 'x'"``).

    Raises
    ------
    ArchiveError
        ``<path>: unexpected tensor 'x'``, ``tensor 'x' has shape (..), expected (..)``,
        ``holds a pickled object array ...``, ``not a readable .npz archive (...)``.
    """
    strings = set(strings)
    for name, (shape, dtype) in _headers(path).items():
        if dtype.hasobject:
            raise ArchiveError(f"{path}: member {name!r} holds a pickled object array; only "
                               f"numeric arrays are read (no allow_pickle)")
        if name in strings:
            _check_string(path, name, shape, dtype)
        elif name not in shapes:
            raise ArchiveError(f"{path}: unexpected tensor {name!r}")
        elif shape != tuple(shapes[name]):
            raise ArchiveError(f"{path}: tensor {name!r} has shape {shape}, expected "
                               f"{tuple(shapes[name])}{context}")
        elif dtype.kind not in "biuf":
            raise ArchiveError(f"{path}: tensor {name!r} has dtype {dtype}, expected "
                               f"integers or floats")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ArchiveError(f"{path}: not a readable .npz archive ({exc})") from None
