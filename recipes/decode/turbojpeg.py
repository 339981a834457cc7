"""Decode only a region of a JPEG with libjpeg-turbo 3's TurboJPEG API (``tj3SetCroppingRegion``), through ``ctypes``:
the rows below the region are never decoded, and the columns outside it skip the inverse DCT and the colour
conversion (on food101 photos the training crop path takes about a quarter less time).

No maintained Python binding exposes cropped decoding, so this module binds the few TurboJPEG 3 functions it needs.
The library is optional: the path in ``VISION_RECIPES_LIBTURBOJPEG`` (``off`` disables the region decode), else the
first libturbojpeg of version 3 or later among :func:`library_candidates` (e.g. conda-forge's ``libjpeg-turbo`` 3.x,
or a distribution's; Debian and Ubuntu ship 2.1, which lacks it). Without it, or for a JPEG it cannot crop (12-bit,
lossless, CMYK, unusual subsampling, a truncated file, corrupt data above or in the box), :func:`decode_region`
returns ``None`` and the caller decodes in full. Corrupt entropy data *below* the box is never read, so it goes
unnoticed there (as it would in any cropped decoder); the data checks of map-style datasets decode every image in
full before training.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import io
import os
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from recipes.decode.images import max_image_pixels
from recipes.decode.jpeg import jpeg_has_end_marker

LIBRARY_ENV = "VISION_RECIPES_LIBTURBOJPEG"
DISABLED = "off"

TJINIT_DECOMPRESS = 1
TJPARAM_SUBSAMP, TJPARAM_JPEGWIDTH, TJPARAM_JPEGHEIGHT, TJPARAM_PRECISION, TJPARAM_LOSSLESS = 4, 5, 6, 7, 15
TJPF_RGB = 0
MCU_WIDTH = (8, 16, 16, 8, 8, 32, 8)
"""Width in pixels of a minimum coded unit for each TurboJPEG subsampling (444, 422, 420, gray, 440, 411, 441):
a cropping region must start at a multiple of it."""


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


def library_candidates() -> list[str]:
    """Where a libturbojpeg may be, in order: the linker's search (``find_library``), this Python environment's
    and conda's ``lib`` folders (which ``find_library`` does not search on Linux), Homebrew's, and the bare
    names (resolved by the dynamic loader, following the interpreter's run path)."""
    folders = [Path(sys.prefix) / "lib", Path(os.environ.get("CONDA_PREFIX") or sys.prefix) / "lib",
               Path("/opt/homebrew/lib"), Path("/usr/local/lib")]
    names = ["libturbojpeg.so.0", "libturbojpeg.so", "libturbojpeg.0.dylib", "libturbojpeg.dylib"]
    found = ctypes.util.find_library("turbojpeg")
    located = [str(folder / name) for folder in dict.fromkeys(folders) for name in names
               if (folder / name).exists()]
    return [*([found] if found else []), *located, *names]


@functools.cache
def load_library(path: str | None = None) -> ctypes.CDLL | None:
    """libturbojpeg at ``path`` (else the first of :func:`library_candidates` that is version 3 or later), with
    the TurboJPEG 3 functions typed; ``None`` when there is none (missing, or older: no
    ``tj3SetCroppingRegion``)."""
    for candidate in [path] if path else library_candidates():
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        if hasattr(lib, "tj3SetCroppingRegion"):
            lib.path = candidate
            return _typed(lib)
    return None


def _typed(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` with argument and result types set on the TurboJPEG 3 functions this module calls."""
    handle, buffer, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    lib.tj3Init.restype, lib.tj3Init.argtypes = handle, [ctypes.c_int]
    lib.tj3Destroy.restype, lib.tj3Destroy.argtypes = None, [handle]
    lib.tj3DecompressHeader.restype, lib.tj3DecompressHeader.argtypes = ctypes.c_int, [handle, buffer, size]
    lib.tj3Get.restype, lib.tj3Get.argtypes = ctypes.c_int, [handle, ctypes.c_int]
    lib.tj3SetCroppingRegion.restype, lib.tj3SetCroppingRegion.argtypes = ctypes.c_int, [handle, _Region]
    lib.tj3Decompress8.restype = ctypes.c_int
    lib.tj3Decompress8.argtypes = [handle, buffer, size, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


class RegionDecoder:
    """One TurboJPEG decompression handle (a handle must not be used by two threads at once)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.pid = os.getpid()
        self.handle = lib.tj3Init(TJINIT_DECOMPRESS)
        if not self.handle:
            raise OSError("libturbojpeg could not create a decompression handle")

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, TypeError):  # at interpreter shutdown
            if getattr(self, "handle", None) and self.pid == os.getpid():  # a forked copy leaves the parent's alone
                self.lib.tj3Destroy(self.handle)

    def decode(self, data: bytes, top: int, left: int, height: int, width: int) -> np.ndarray | None:
        """RGB ``uint8`` pixels (height, width, 3) of the box of the stored (not EXIF-rotated) image, as a view of
        the decoded rows (which start at the MCU boundary left of the box), or ``None`` when libjpeg-turbo cannot
        decode this JPEG's region (then decode it in full)."""
        lib, handle = self.lib, self.handle
        data = data if isinstance(data, bytes) else bytes(data)  # ctypes passes bytes without a copy
        if not jpeg_has_end_marker(data):  # truncated: rows below the box are never read, so libjpeg would not notice
            return None
        if lib.tj3DecompressHeader(handle, data, len(data)) != 0:
            return None
        subsampling = lib.tj3Get(handle, TJPARAM_SUBSAMP)
        image_w, image_h = lib.tj3Get(handle, TJPARAM_JPEGWIDTH), lib.tj3Get(handle, TJPARAM_JPEGHEIGHT)
        if (not 0 <= subsampling < len(MCU_WIDTH) or image_w * image_h > max_image_pixels()
                or lib.tj3Get(handle, TJPARAM_PRECISION) != 8
                or lib.tj3Get(handle, TJPARAM_LOSSLESS) == 1):
            return None
        if min(top, left) < 0 or min(height, width) <= 0 or top + height > image_h or left + width > image_w:
            return None
        start = left - left % MCU_WIDTH[subsampling]
        region = _Region(start, top, left + width - start, height)
        if lib.tj3SetCroppingRegion(handle, region) != 0:
            return None
        rows = np.empty((height, region.w, 3), np.uint8)
        if lib.tj3Decompress8(handle, data, len(data), rows.ctypes.data, 0, TJPF_RGB) != 0:
            return None  # an error, or a warning (corrupt data): the full decode reports the file by name
        return rows[:, left - start : left - start + width]


_THREAD = threading.local()


def region_decoder() -> RegionDecoder | None:
    """This thread's :class:`RegionDecoder` (a fresh one in a forked loader worker), or ``None`` when no
    libturbojpeg 3 is available or ``VISION_RECIPES_LIBTURBOJPEG=off``."""
    path = os.environ.get(LIBRARY_ENV) or None
    if path == DISABLED:
        return None
    lib = load_library(path)
    if lib is None:
        return None
    decoder = getattr(_THREAD, "decoder", None)
    if decoder is None or decoder.lib is not lib or decoder.pid != os.getpid():
        decoder = _THREAD.decoder = RegionDecoder(lib)
    return decoder


def decode_region(data: bytes, top: int, left: int, height: int, width: int) -> np.ndarray | None:
    """The box's RGB pixels (height, width, 3) decoded alone (:meth:`RegionDecoder.decode`), or ``None`` when
    that is not available for these bytes."""
    decoder = region_decoder()
    return None if decoder is None else decoder.decode(data, top, left, height, width)


def region_decoding_library() -> str | None:
    """What :func:`decode_region` uses, for logs and benchmark reports: the library, once it has decoded the
    region of a small test JPEG here; ``None`` otherwise."""
    decoder = region_decoder()
    if decoder is None:
        return None
    y, x = np.mgrid[0:24, 0:40]
    probe = np.stack([x * 6, y * 10, x * y % 256], -1).astype(np.uint8)
    image = Image.fromarray(probe)
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=95, subsampling=2)
    rows = decoder.decode(encoded.getvalue(), 3, 11, 16, 20)
    return decoder.lib.path if rows is not None and rows.shape == (16, 20, 3) else None


def region_decoding_status() -> str:
    """One line for the training log: whether crops decode only their box, and how to get it when they do not."""
    library = region_decoding_library()
    if library:
        return f"Training crops decode only their box of each JPEG (libjpeg-turbo 3: {library})."
    return ("Training crops decode each JPEG whole. With libjpeg-turbo >= 3 (e.g. conda install -c conda-forge "
            f"libjpeg-turbo, or {LIBRARY_ENV}=/path/to/libturbojpeg.so) they decode only their box, about a quarter "
            "faster.")
