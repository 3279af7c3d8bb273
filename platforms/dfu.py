"""The USB DFU file suffix (DFU 1.1, appendix B), as dfu-util's ``dfu-suffix -a`` writes it.

A DFU bootloader such as the OrangeCrab's accepts an image only with this
16-byte trailer naming the USB device it is meant for. dfu-util is not on
PyPI, so the open ECP5 flow appends the suffix itself::

    image | bcdDevice idProduct idVendor bcdDFU "UFD" bLength | dwCRC
            (u16 little-endian each)   0x0100 reversed  16      CRC-32 of all
                                                                bytes before it
"""

import struct
import zlib

__all__ = ["with_dfu_suffix", "SUFFIX_LENGTH"]

SUFFIX_LENGTH = 16


def with_dfu_suffix(image, *, vendor, product, device=0xFFFF):
    """``image`` followed by a DFU suffix for USB ``vendor:product`` (``device`` 0xFFFF: any).

    The CRC is dfu-util's: CRC-32 (zlib's polynomial) over the image and the
    first 12 suffix bytes, without the final inversion.
    """
    body = bytes(image) + struct.pack("<HHHH3sB", device, product, vendor, 0x0100, b"UFD",
                                      SUFFIX_LENGTH)
    return body + struct.pack("<I", zlib.crc32(body) ^ 0xFFFFFFFF)
