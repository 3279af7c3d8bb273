"""The accelerator's memory formats: matrix images, LayerNorm parameter images, tensors, striping.

Every byte the accelerator reads from DRAM or writes back is in one of these
formats; the compiler writes them, the reference executor and the runtime read
them back, and the RTL units decode them (bit offsets come from the units'
``lib.data`` layouts, never from this file).

* **Matrix image** (:func:`matrix_image`, :func:`decode_matrix_image`): what the
  linear kernel takes on ``w`` (:mod:`rtl.compute.linear`): header, weight words in tile
  order, channel words, optionally the GELU table.
* **LayerNorm image** (:func:`norm_image`, :func:`decode_norm_image`): what the
  LayerNorm unit takes on ``p`` (:func:`rtl.compute.layernorm.param_layout`): ``d / lanes``
  words of gain and bias, ``shift`` and ``eps`` in every word.
* **Tensor** (:func:`tensor_bytes`, :func:`tensor_from_bytes`): a row-major block of
  int8 / uint8 / int16 elements, little endian, each row padded with zeros to a
  whole buffer memory word (so that a load-path word never spans two rows).

A unit word wider than the bus is split into ``ceil(bits / bus)`` beats, least
significant first (:func:`split_word`). Beats become bytes little endian
(:func:`beats_to_bytes`). With several AXI ports the load path is ``ports``
bus words wide and every transfer is **striped**: port ``p`` reads bus word ``p``
of every load-path word from its own contiguous sub-region (:func:`stripe`).
"""

import numpy as np

from golden.quant import BIAS_MAX, MULT_MAX, SHIFT_MAX
from rtl.compute.layernorm import EPS_BITS, param_layout
from rtl.compute.linear import GELU_ENTRIES, HEADER, OutMode, channel_layout, image_beats

from .packing import pack, pack_rows, unpack, unpack_rows

__all__ = ["split_word", "join_beats", "beats_to_bytes", "bytes_to_beats", "stripe", "unstripe",
           "matrix_image", "decode_matrix_image", "norm_image",
           "decode_norm_image", "tensor_size", "tensor_bytes", "tensor_from_bytes"]

_MODE_BITS = {OutMode.INT8: 8, OutMode.INT16: 16, OutMode.INT32: 32}


def split_word(word, bits, bus_width):
    """A ``bits``-wide word as ``ceil(bits / bus_width)`` bus beats, least significant first."""
    return [(word >> (i * bus_width)) & ((1 << bus_width) - 1)
            for i in range(-(-bits // bus_width))]


def join_beats(beats, bus_width):
    """Inverse of :func:`split_word`: one int from consecutive beats, the first the lowest."""
    word = 0
    for i, beat in enumerate(beats):
        word |= int(beat) << (i * bus_width)
    return word


def beats_to_bytes(beats, bus_width):
    """Bus beats (ints) as little-endian bytes, ``bus_width / 8`` per beat."""
    n = bus_width // 8
    return b"".join(int(b).to_bytes(n, "little") for b in beats)


def bytes_to_beats(raw, bus_width):
    """Inverse of :func:`beats_to_bytes`; ``len(raw)`` must be a whole number of beats."""
    n = bus_width // 8
    if len(raw) % n:
        raise ValueError(f"{len(raw)} bytes are not a whole number of {bus_width}-bit beats")
    return [int.from_bytes(raw[i:i + n], "little") for i in range(0, len(raw), n)]


def stripe(raw, axi):
    """Bytes of a transfer as its DRAM layout for the ports ``axi`` (an ``AxiPorts``).

    The transfer is padded with zeros to whole load-path words (``axi.ports`` bus
    words each). Sub-region ``p``, at ``p * axi.sub_region(words)``, holds bus word
    ``p`` of every load-path word, one after the other, then zeros to the next 4 KB
    (with one port: the transfer itself, padded to a whole word).
    """
    ports, port = axi.ports, axi.data_bytes
    words = axi.words(len(raw))
    padded = np.zeros(words * ports * port, np.uint8)
    padded[:len(raw)] = np.frombuffer(bytes(raw), np.uint8)
    out = np.zeros((ports, axi.sub_region(words)), np.uint8)
    out[:, :words * port] = padded.reshape(words, ports, port).transpose(1, 0, 2) \
        .reshape(ports, -1)
    return out.tobytes()


def unstripe(raw, axi, words):
    """The ``words`` load-path words of a transfer from its :func:`stripe` layout."""
    ports, port = axi.ports, axi.data_bytes
    size = axi.footprint(words)
    if len(raw) < size:
        raise ValueError(f"a {words}-word transfer takes {size} bytes, got {len(raw)}")
    sub = np.frombuffer(bytes(raw[:size]), np.uint8).reshape(ports, -1)[:, :words * port]
    return sub.reshape(ports, words, port).transpose(1, 0, 2).tobytes()


def _checked(name, what, values, lo, hi, shape):
    values = np.broadcast_to(np.asarray(values, np.int64), shape)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"{what} of {name} must be in [{lo}, {hi}], "
                         f"found [{int(values.min())}, {int(values.max())}]")
    return values


def matrix_image(config, name, weight, bias, *, mult=1, shift=0, zero_point=0, bits=None,
                 gelu_table=None):
    """Bus beats (ints) of one matrix image for ``config``.

    The kernel computes, per output channel ``c``,
    ``golden.quant.requantize(x @ weight.T + bias, mult[c], shift[c], zero_point, bits)``
    and, given a table, ``golden.gelu.gelu_int`` of that (``bits`` must then be 8).

    Parameters
    ----------
    config : rtl.compute.linear.LinearConfig
    name : str
        Names the matrix in errors.
    weight : int array, shape (d_out, d_in), values in [-128, 127]
        torch layout ``[out, in]``.
    bias : int array, shape (d_out,)
        int32, within ``golden.quant.BIAS_MAX``.
    mult, shift : int or int array of shape (d_out,)
        Requantizer per output channel (``golden.quant.dyadic``); the default passes
        ``acc + bias`` through unchanged.
    zero_point : int
        Added after rounding, within the output range.
    bits : 8, 16 or 32, optional
        Output width (saturation range); at most (and by default) ``config.out_width``.
    gelu_table : int array of shape (256,), optional
        ``golden.gelu.gelu_table``; needs ``config.gelu`` and ``bits == 8``.
    """
    weight, bias = np.asarray(weight, np.int64), np.asarray(bias, np.int64)
    d_out, d_in = weight.shape
    if bias.shape != (d_out,):
        raise ValueError(f"bias of {name} must have shape ({d_out},), not {bias.shape}")
    kb, nb = config.check_matrix(name, d_in, d_out)
    _checked(name, "weight", weight, -128, 127, weight.shape)
    _checked(name, "bias", bias, -BIAS_MAX, BIAS_MAX, bias.shape)
    bits = config.out_width if bits is None else bits
    if bits not in (8, 16, 32) or bits > config.out_width:
        raise ValueError(f"bits of {name} must be 8, 16 or 32 and at most the kernel's "
                         f"out_width {config.out_width}, not {bits}")
    mult = _checked(name, "mult", mult, 0, MULT_MAX, (d_out,))
    shift = _checked(name, "shift", shift, 0, SHIFT_MAX, (d_out,))
    _checked(name, "zero_point", zero_point, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, ())
    if bits == 32:
        _checked(name, "zero_point", zero_point, -(1 << 15), (1 << 15) - 1, ())
    if gelu_table is not None:
        if not config.gelu or bits != 8:
            raise ValueError(f"gelu_table of {name} needs a kernel built with gelu=True and "
                             f"bits=8, not gelu={config.gelu} and bits={bits}")
        if np.shape(gelu_table) != (GELU_ENTRIES,):
            raise ValueError(f"gelu_table of {name} must have {GELU_ENTRIES} entries, "
                             f"not shape {np.shape(gelu_table)}")
        gelu_table = _checked(name, "gelu_table", gelu_table, -128, 127, (GELU_ENTRIES,))
    pi, po, bus = config.pi, config.po, config.bus_width
    padded = np.zeros((nb * po, kb * pi), np.int64)
    padded[:d_out, :d_in] = weight
    channels = np.zeros((3, nb * po), np.int64)
    channels[:, :d_out] = bias, mult, shift
    channels = channels.reshape(3, nb, po)
    mode = {8: OutMode.INT8, 16: OutMode.INT16, 32: OutMode.INT32}[bits]
    beats = [pack(HEADER, {"kb": kb, "nb": nb, "zero_point": int(zero_point), "mode": mode.value,
                           "gelu": int(gelu_table is not None)})]
    # Tile (j, s) holds W[j*PO + c, s*PI + i] at [c][i]: output fold major, input fold minor.
    tiles = padded.reshape(nb, po, kb, pi).transpose(0, 2, 1, 3).reshape(nb * kb, po * pi)
    w_bits = config.weight_layout.size
    for word in pack_rows(config.weight_layout, tiles):
        beats += split_word(word, w_bits, bus)
    c_layout = channel_layout(po)
    for word in pack_rows(c_layout, {"bias": channels[0], "mult": channels[1],
                                     "shift": channels[2]}):
        beats += split_word(word, c_layout.size, bus)
    if gelu_table is not None:
        per = config.entries_per_beat
        beats += [pack(config.table_layout, gelu_table[i:i + per])
                  for i in range(0, GELU_ENTRIES, per)]
    return beats


def decode_matrix_image(config, beats, name="matrix image"):
    """Read a :func:`matrix_image` back: the kernel's view of it.

    Returns
    -------
    dict
        ``kb``, ``nb``, ``zero_point``, ``bits`` (8, 16 or 32), ``weight`` (int64,
        ``(nb * po, kb * pi)``, zero beyond the matrix), ``bias``, ``mult``, ``shift``
        (``(nb * po,)``), ``gelu_table`` (int64 ``(256,)`` or None) and ``beats`` (how
        many beats the image took).

    Raises
    ------
    ValueError
        ``<name>: ...`` if the header's folds exceed the kernel or the beats run out.
    """
    if not beats:
        raise ValueError(f"{name}: empty")
    head = unpack(HEADER, beats[0])
    kb, nb = head["kb"], head["nb"]
    if not (1 <= kb <= config.kb_max and 1 <= nb <= config.nb_max
            and kb * nb <= config.max_weight_words):
        raise ValueError(f"{name}: header folds kb={kb}, nb={nb} do not fit the kernel "
                         f"(kb <= {config.kb_max}, nb <= {config.nb_max}, "
                         f"kb * nb <= {config.max_weight_words})")
    if head["mode"] not in {m.value for m in OutMode}:
        raise ValueError(f"{name}: header mode {head['mode']} is not an OutMode")
    mode = OutMode(head["mode"])
    gelu = bool(head["gelu"])
    total = image_beats(config, kb, nb, gelu)
    if len(beats) < total:
        raise ValueError(f"{name}: {len(beats)} beats, the header needs {total}")
    pi, po, bus = config.pi, config.po, config.bus_width
    bpw, bpc = config.beats_per(config.weight_layout), config.beats_per(channel_layout(po))
    words = [join_beats(beats[1 + n * bpw:1 + (n + 1) * bpw], bus) for n in range(nb * kb)]
    tiles = unpack_rows(config.weight_layout, words).reshape(nb, kb, po, pi)
    weight = tiles.transpose(0, 2, 1, 3).reshape(nb * po, kb * pi)
    pos = 1 + nb * kb * bpw
    words = [join_beats(beats[pos + n * bpc:pos + (n + 1) * bpc], bus) for n in range(nb)]
    chan = unpack_rows(channel_layout(po), words)
    bias, mult, shift = (chan[f].reshape(-1) for f in ("bias", "mult", "shift"))
    pos += nb * bpc
    table = None
    if gelu:
        table = np.concatenate([unpack(config.table_layout, b)
                                for b in beats[pos:pos + config.table_beats]])
        pos += config.table_beats
    return {"kb": kb, "nb": nb, "zero_point": head["zero_point"], "bits": _MODE_BITS[mode],
            "weight": weight, "bias": bias, "mult": mult, "shift": shift, "gelu_table": table,
            "beats": pos}


def norm_image(lanes, bus_width, name, gain, bias, shift, eps):
    """Bus beats of one LayerNorm parameter image (``d / lanes`` unit words).

    ``gain`` int16 and ``bias`` int32 per channel, ``shift`` in [0, 46] and ``eps`` in
    [1, 2**40] as ``golden.layernorm.int_layernorm`` takes them.
    """
    gain, bias = np.asarray(gain, np.int64), np.asarray(bias, np.int64)
    d = gain.shape[0]
    if gain.shape != (d,) or bias.shape != (d,) or d % lanes:
        raise ValueError(f"gain and bias of {name} must be ({d},) with {d} a multiple of "
                         f"the LayerNorm lanes {lanes}, not {gain.shape} and {bias.shape}")
    _checked(name, "gain", gain, -(1 << 15), (1 << 15) - 1, (d,))
    _checked(name, "bias", bias, -(1 << 31), (1 << 31) - 1, (d,))
    _checked(name, "shift", shift, 0, 46, ())
    _checked(name, "eps", eps, 1, (1 << (EPS_BITS - 1)), ())
    layout = param_layout(lanes)
    words = pack_rows(layout, {"gain": gain.reshape(-1, lanes), "bias": bias.reshape(-1, lanes),
                               "shift": int(shift), "eps": int(eps)})
    return [beat for word in words for beat in split_word(word, layout.size, bus_width)]


def decode_norm_image(lanes, bus_width, d, beats, name="norm image"):
    """Read a :func:`norm_image` of ``d`` channels back: ``gain``, ``bias``, ``shift``, ``eps``
    (the values of the final word, as the unit takes them) and ``beats``."""
    layout = param_layout(lanes)
    per = -(-layout.size // bus_width)
    words = d // lanes
    if d % lanes or len(beats) < words * per:
        raise ValueError(f"{name}: {d} channels need {words * per} beats at {lanes} lanes "
                         f"(d a multiple of lanes), got {len(beats)}")
    p = unpack_rows(layout, [join_beats(beats[j * per:(j + 1) * per], bus_width)
                             for j in range(words)])
    gain, bias = p["gain"].reshape(-1), p["bias"].reshape(-1)
    word = {"shift": int(p["shift"][-1]), "eps": int(p["eps"][-1])}
    return {"gain": gain, "bias": bias, "shift": word["shift"], "eps": word["eps"],
            "beats": words * per}


_DTYPES = {"int8": "<i1", "uint8": "<u1", "int16": "<i2"}


def _pitch(cols, align):
    return -(-cols // align) * align


def tensor_size(rows, cols, dtype, align=1):
    """Bytes of a :func:`tensor_bytes` tensor."""
    return rows * _pitch(cols, align) * np.dtype(_DTYPES[dtype]).itemsize


def tensor_bytes(array, dtype, align=1):
    """A 2-D tensor as row-major little-endian bytes of ``dtype`` (``int8``, ``uint8``,
    ``int16``), every row padded with zeros to a multiple of ``align`` elements (a whole
    buffer memory word, :meth:`rtl.config.AcceleratorConfig.row_align`); values must lie
    in the dtype's range."""
    array = np.asarray(array)
    info = np.iinfo(_DTYPES[dtype])
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"tensor values must be in [{info.min}, {info.max}] for {dtype}, "
                         f"found [{int(array.min())}, {int(array.max())}]")
    padded = np.zeros((array.shape[0], _pitch(array.shape[1], align)), _DTYPES[dtype])
    padded[:, :array.shape[1]] = array
    return padded.tobytes()


def tensor_from_bytes(raw, dtype, rows, cols, align=1):
    """Inverse of :func:`tensor_bytes` (extra trailing bytes, the bus padding, are ignored)."""
    n = tensor_size(rows, cols, dtype, align)
    if len(raw) < n:
        raise ValueError(f"{rows} x {cols} {dtype} need {n} bytes, got {len(raw)}")
    full = np.frombuffer(bytes(raw[:n]), _DTYPES[dtype]).reshape(rows, _pitch(cols, align))
    return full[:, :cols].astype(np.int64)
