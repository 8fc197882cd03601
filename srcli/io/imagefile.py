"""Image files for ``srcli upscale``: decode any supported file to float pixels, encode results, write atomically.

Pixels travel as float32 in [0, 1], colour straight (not premultiplied), alpha as a separate plane, so the SR model
sees colour only and the alpha plane can be resized on its own. What a source holds is kept where the output format
can hold it: 16 bits per sample (PNG, TIFF), a single grey channel, transparency, the ICC profile and, on request, the
EXIF block. Pixels are never converted between colour spaces (except CMYK, which the models cannot take): the model
works on the source's encoded values, so re-embedding the source profile describes the output correctly.

Reading goes through Pillow, except for 16-bit colour, which Pillow truncates to 8 bits (see ``_read_16bit_pillow``;
pypng and tifffile are the fallbacks). Every problem with an input file is an ``ImageReadError`` whose message is one
line, "<path>: <cause>".
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from srcli.atomic import atomic_writer
from srcli.errors import ImageReadError, ImageWriteError, UsageError

# 64 Mi pixels: a 61 MP camera frame fits; a x4 result of it is already ~1 Gpx of float32 RGB (12 GiB).
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
MAX_PIXELS_HINT = "raise the limit with --max-pixels"
# zlib level for PNG/TIFF. On bicubic-x4 Set14 images (benchmarks/imagefile_io.py) level 3 wrote 8-11 % more bytes
# than level 6 in a third of the time (baboon 2000x1920: 1.3 s vs 4.3 s); batch wall time matters more here.
PNG_COMPRESS_LEVEL = 3
DEFAULT_QUALITY = 95  # JPEG and lossy WebP; --quality 100 means lossless WebP
# Lossless WebP effort (libwebp's quality means effort in lossless mode). The fastest setting was 3.5-5.5x faster
# than quality 25 / method 2 for 32-41 % more bytes, and still smaller and faster than PNG at level 3.
WEBP_LOSSLESS_EFFORT = {"quality": 0, "method": 0}

# Multi-picture JPEGs open as "MPO" through the JPEG opener, so MPO needs no entry here.
READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
WRITE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
_FORMAT_ALIASES = {
    "png": "PNG",
    "apng": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
    "gif": "GIF",
}
_EXTENSION = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp", "GIF": "gif"}
_SOURCE_TO_OUTPUT = {"MPO": "JPEG"}
NO_ALPHA_FORMATS = frozenset({"JPEG", "BMP"})
_16BIT_FORMATS = frozenset({"PNG", "TIFF"})
_ORIENTATION = 0x0112
_EXIF_PREFIX = b"Exif\x00\x00"
# IFD0 tags worth carrying from a TIFF source; the rest describe the TIFF's own strips and would be wrong elsewhere.
_TIFF_EXIF_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298, 0x8769, 0x8825)

# Image.MAX_IMAGE_PIXELS is process-wide; it is lifted only under this lock, while srcli's own limit applies.
_PILLOW_LIMIT_LOCK = threading.RLock()


@dataclass
class Frame:
    """One picture: straight colour and an optional alpha plane.

    Decoded frames are float32 in [0, 1] with colour (H, W, 3). Result frames may already be at the file's
    bit depth (uint8 / uint16), and a grey result's colour may be one (H, W) plane; the writer takes all of these.
    """

    rgb: np.ndarray  # (H, W, 3), or (H, W) for a grey result
    alpha: np.ndarray | None  # (H, W)
    duration_ms: int | None = None  # animated frames only


@dataclass
class DecodedImage:
    """A decoded input file and everything needed to write its result the same way."""

    path: Path
    format: str  # Pillow format name of the content (not of the extension)
    frames: list[Frame]
    grey: bool  # single-channel source: frames hold three equal channels; outputs are written grey
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None
    exif: bytes | None  # "Exif\0\0"-prefixed, Orientation reset to 1 (already applied to the pixels)
    loop: int | None  # animated: Pillow's loop value for the source format (None: play once)
    notes: list[str] = field(default_factory=list)  # things the user may want to know (extension, bits lost)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        h, w = self.frames[0].rgb.shape[:2]
        return w, h

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1

    @property
    def has_alpha(self) -> bool:
        return any(f.alpha is not None for f in self.frames)


class OutputFormat(NamedTuple):
    """What to write: Pillow format name, file extension without the dot, and a note for the user (or None)."""

    format: str
    extension: str
    note: str | None


class _Unsupported(Exception):
    """A readable file whose content srcli does not handle; the message is the cause shown to the user."""


# --------------------------------------------------------------------------------------------------- reading


@dataclass
class _Header:
    format: str
    width: int  # after orientation
    height: int
    n_frames: int  # frames srcli reads: >1 only for animations
    source_frames: int  # pages or pictures in the file
    orientation: int
    exif: Image.Exif
    exif_raw: bytes | None
    png_bit_depth: int | None = None
    png_colour_type: int | None = None

    @property
    def animated(self) -> bool:
        return self.n_frames > 1


@dataclass(frozen=True)
class ImageFacts:
    """What the headers of an image file say, enough to plan its output without decoding it.

    ``has_alpha`` and ``bit_depth`` agree with what ``read_image`` will decode (alpha plane present,
    16-bit samples), so the output format chosen from them at planning is the one the result needs.
    """

    path: Path
    format: str  # Pillow format name of the content
    width: int  # after EXIF orientation
    height: int
    n_frames: int  # >1 only for animations
    has_alpha: bool
    bit_depth: int  # 8 or 16

    @property
    def animated(self) -> bool:
        return self.n_frames > 1


def _header_alpha(im: Image.Image, header: _Header) -> bool:
    """Whether decoding gives an alpha plane (see ``_pixels_from_pillow`` and the 16-bit readers)."""
    mode, trns = im.mode, im.info.get("transparency")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return True
    if header.format == "PNG" and header.png_colour_type in (4, 6):
        return True
    if header.format == "TIFF":
        samples, photometric = im.tag_v2.get(277, 1), im.tag_v2.get(262, 2)
        if isinstance(samples, int) and samples > (3 if photometric == 2 else 1):
            return True
    if header.animated:
        # Animation frames are composited; a transparency index may give an alpha plane.
        return trns is not None
    if mode == "P":
        return trns is not None
    return trns is not None and not isinstance(trns, bytes)


def _header_bit_depth(im: Image.Image, header: _Header) -> int:
    if header.animated:
        return 8
    if header.format == "PNG" and header.png_bit_depth == 16:
        return 16
    if header.format == "TIFF" and _tiff_bits(im) == 16:
        return 16
    return 16 if im.mode.startswith("I;16") or im.mode == "I" else 8


def inspect_image(
    path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> ImageFacts:
    """``ImageFacts`` of ``path`` from its headers, with the same checks as ``read_image`` (readable, supported,
    within ``max_pixels``); raises ``ImageReadError("<path>: <cause>")`` otherwise."""
    path = Path(path)
    with _open(path) as im, _read_errors(path):
        header = _header(path, im)
        facts = ImageFacts(
            path=path,
            format=header.format,
            width=header.width,
            height=header.height,
            n_frames=header.n_frames,
            has_alpha=_header_alpha(im, header),
            bit_depth=_header_bit_depth(im, header),
        )
    _check_size(path, header, max_pixels, min_side)
    return facts


def probe_image(
    path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> tuple[int, int, int]:
    """(width, height, n_frames) of ``path`` after EXIF orientation, from the headers only.

    Applies the same checks as ``read_image`` (readable, supported, size limits), so a batch can reject bad files
    before any decoding. ``n_frames`` is 1 except for animated GIF/WebP/PNG.
    """
    path = Path(path)
    with _open(path) as im, _read_errors(path):
        header = _header(path, im)
    _check_size(path, header, max_pixels, min_side)
    return header.width, header.height, header.n_frames


def read_image(
    path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int | None = None
) -> DecodedImage:
    """Decode ``path`` into float frames, applying EXIF orientation.

    Still images give one frame; animated GIF, WebP and PNG give every frame, composited as displayed.
    ``max_pixels`` bounds width x height x frames (None: no limit); ``min_side`` is the smallest width or height
    accepted (e.g. what a model needs). Raises ``ImageReadError("<path>: <cause>")`` for anything unusable.
    """
    path = Path(path)
    with _open(path) as im, _read_errors(path):
        header = _header(path, im)
        _check_size(path, header, max_pixels, min_side)
        # Pillow re-checks its own bomb limit while seeking GIF frames; srcli's limit has been applied above.
        big = header.width * header.height > (Image.MAX_IMAGE_PIXELS or sys.maxsize)
        with _pillow_limit_lifted() if big else contextlib.nullcontext():
            decoded = _decode(path, im, header)
    expected = _SUFFIX_FORMAT.get(path.suffix.lower())
    if expected is not None and expected != _SOURCE_TO_OUTPUT.get(decoded.format, decoded.format):
        decoded.notes.append(
            f"content is {decoded.format}, not {expected} as the extension says; read as {decoded.format}"
        )
    return decoded


_SUFFIX_FORMAT = {"." + ext: fmt for ext, fmt in _FORMAT_ALIASES.items() if ext != "apng"}


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn whatever a decoder raises on a damaged or odd file into one ``ImageReadError`` line."""
    try:
        yield
    except ImageReadError:
        raise
    except _Unsupported as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - decoders of damaged files raise anything; the user gets one line
        raise ImageReadError(f"{path}: damaged or truncated image data ({_describe(exc)})") from None


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _pil_open(path: Path, formats: tuple[str, ...] | None = READ_FORMATS) -> Image.Image:
    """Image.open without Pillow's decompression-bomb limit (srcli checks its own ``max_pixels``)."""
    with _pillow_limit_lifted():
        return Image.open(path, formats=formats)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow (headers only), turning every failure into a one-line ``ImageReadError``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(f"{path}: is a folder, not an image")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        im = _pil_open(path)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: {_unidentified_cause(path)}") from None
    except OSError as exc:
        if exc.errno is not None:  # the system refused (permissions, I/O error)
            raise ImageReadError(f"{path}: cannot open ({exc.strerror or _describe(exc)})") from None
        raise ImageReadError(f"{path}: damaged or truncated image data ({_describe(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - header parsers of damaged files raise anything
        raise ImageReadError(f"{path}: damaged image header ({_describe(exc)})") from None
    with im:
        yield im


def _unidentified_cause(path: Path) -> str:
    try:
        with _pil_open(path, formats=None) as other:
            return f"unsupported image format {other.format} (srcli reads PNG, JPEG, WebP, TIFF, BMP and GIF)"
    except Exception:  # noqa: BLE001 - only used to name the format
        return "not an image (unknown format, or a damaged header)"


def _header(path: Path, im: Image.Image) -> _Header:
    fmt = im.format or "?"
    source_frames = int(getattr(im, "n_frames", 1))
    n_frames = source_frames if fmt in ANIMATED_FORMATS else 1
    png_depth = png_type = None
    if fmt == "PNG":
        png_depth, png_type, exif_raw = _scan_png(path)
        exif = Image.Exif()
        if exif_raw:
            exif.load(exif_raw)
    else:
        exif, exif_raw = im.getexif(), im.info.get("exif")
    orientation = exif.get(_ORIENTATION, 1)
    if orientation not in range(1, 9):
        orientation = 1
    w, h = im.size
    if fmt == "TIFF":  # Pillow may report a TIFF's size already turned by its Orientation tag: use the stored one
        stored = im.tag_v2.get(256), im.tag_v2.get(257)
        if all(isinstance(v, int) for v in stored):
            w, h = stored
    if orientation >= 5:
        w, h = h, w
    raw = exif_raw if isinstance(exif_raw, bytes) and exif_raw else None
    return _Header(fmt, w, h, n_frames, source_frames, orientation, exif, raw, png_depth, png_type)


def _check_size(path: Path, header: _Header, max_pixels: int | None, min_side: int | None) -> None:
    w, h, n = header.width, header.height, header.n_frames
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{path}: image has no pixels ({w} x {h})")
    if max_pixels is not None and w * h * n > max_pixels:
        frames = f" x {n} frames" if n > 1 else ""
        raise ImageReadError(
            f"{path}: {w} x {h} pixels{frames} ({w * h * n / 1e6:.1f} MP) is over the limit of "
            f"{max_pixels / 1e6:.1f} MP; {MAX_PIXELS_HINT}"
        )
    if min_side is not None and min(w, h) < min_side:
        raise ImageReadError(f"{path}: {w} x {h} pixels is too small (needs at least {min_side} on each side)")


def _scan_png(path: Path) -> tuple[int, int, bytes | None]:
    """Bit depth and colour type from IHDR, and the eXIf payload, by skipping from chunk header to chunk header.

    Pillow only sees an eXIf chunk placed after the pixel data by decoding the pixels first.
    """
    exif = None
    with open(path, "rb") as fh:
        head = fh.read(33)
        if len(head) < 33 or head[12:16] != b"IHDR":
            raise _Unsupported("damaged PNG header")
        depth, colour_type = head[24], head[25]
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                break
            length, kind = struct.unpack(">I4s", chunk)
            if kind == b"eXIf":
                exif = fh.read(length)
                fh.seek(4, io.SEEK_CUR)
            elif kind == b"IEND":
                break
            else:
                fh.seek(length + 4, io.SEEK_CUR)
    return depth, colour_type, exif


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _decode(path: Path, im: Image.Image, header: _Header) -> DecodedImage:
    notes: list[str] = []
    icc = im.info.get("icc_profile") or None
    loop = None
    if header.animated:
        loop = im.info.get("loop")
        frames, grey, depth = _decode_animation(im, header, notes)
    else:
        if header.source_frames > 1:
            what = "pages" if header.format == "TIFF" else "pictures"
            notes.append(f"{header.source_frames} {what} in the file; only the first is used")
        orientation = header.orientation
        if header.format == "PNG" and header.png_bit_depth == 16 and header.png_colour_type != 0:
            pixels = _read_png16(path, orientation)
        elif header.format == "TIFF" and _tiff_bits(im) == 16:
            pixels = _read_tiff16(path, im, orientation)
        else:
            source = im
            if im.mode == "CMYK":
                im, icc = _cmyk_to_rgb(im, icc, notes)
            pixels = _pixels_from_pillow(im)
            pixels.oriented = _pillow_oriented(source, orientation)
        frames = [_to_frame(pixels, header.orientation)]
        grey, depth = pixels.grey, pixels.bit_depth
    return DecodedImage(
        path=path,
        format=header.format,
        frames=frames,
        grey=grey,
        bit_depth=depth,
        icc_profile=icc,
        exif=_carried_exif(header),
        loop=loop,
        notes=notes,
    )


@dataclass
class _Pixels:
    colour: np.ndarray  # (H, W, 1 or 3) uint8/uint16
    alpha: np.ndarray | None  # (H, W) same dtype
    premultiplied: bool = False
    oriented: bool = False  # the decoder already applied the EXIF orientation

    @property
    def grey(self) -> bool:
        return self.colour.shape[2] == 1

    @property
    def bit_depth(self) -> int:
        return 16 if self.colour.dtype == np.uint16 else 8


def _to_frame(pixels: _Pixels, orientation: int, duration_ms: int | None = None) -> Frame:
    scale = np.float32(65535 if pixels.bit_depth == 16 else 255)
    colour = pixels.colour.astype(np.float32) / scale  # true division: k/255 and k/65535 exactly rounded
    alpha = None if pixels.alpha is None else pixels.alpha.astype(np.float32) / scale
    if pixels.premultiplied and alpha is not None:
        colour = np.divide(colour, alpha[..., None], out=np.zeros_like(colour), where=alpha[..., None] > 0)
        np.clip(colour, 0.0, 1.0, out=colour)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if pixels.oriented:
        orientation = 1
    rgb = _orient(colour, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    return Frame(rgb=rgb, alpha=alpha, duration_ms=duration_ms)


def _pillow_oriented(im: Image.Image, orientation: int) -> bool:
    """Whether Pillow turned the pixels itself while loading (it does for TIFF, then drops the tag)."""
    return orientation != 1 and im.getexif().get(_ORIENTATION, 1) != orientation


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an (H, W, ...) array: the same result as ``ImageOps.exif_transpose``."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x.swapaxes(0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _pixels_from_pillow(im: Image.Image) -> _Pixels:
    """Integer planes of an 8-bit (or Pillow-exact 16-bit grey) image, with palette and tRNS made into alpha."""
    mode, trns = im.mode, im.info.get("transparency")
    if mode == "1":
        im, mode = im.convert("L"), "L"
        trns = None if trns is None else (255 if trns else 0)
    if mode in ("P", "PA"):
        mode = "RGBA" if mode == "PA" or trns is not None else "RGB"
        im, trns = im.convert(mode), None
    elif mode in ("La", "RGBa"):  # premultiplied: Pillow's conversion divides by alpha
        mode = mode.upper()
        im = im.convert(mode)
    elif mode in ("RGBX", "YCbCr", "LAB", "HSV"):
        im, mode, trns = im.convert("RGB"), "RGB", None
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    elif mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise _Unsupported("32-bit integer samples are not supported")
        arr = arr.astype(np.uint16)
        mode = "L"
    elif mode == "F":
        raise _Unsupported("32-bit floating-point images are not supported")
    else:
        raise _Unsupported(f"unsupported pixel mode {mode}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if mode in ("LA", "RGBA"):
        return _Pixels(arr[..., :-1], arr[..., -1])
    return _Pixels(arr, _colour_key_alpha(arr, trns))


def _colour_key_alpha(colour: np.ndarray, trns: object) -> np.ndarray | None:
    """Alpha from a PNG tRNS colour key: transparent exactly where every sample equals the key."""
    if trns is None or isinstance(trns, bytes):
        return None
    key = np.asarray(trns if isinstance(trns, tuple) else (trns,), dtype=np.int64)
    if key.size != colour.shape[2]:
        return None
    maxval = np.iinfo(colour.dtype).max
    return np.where((colour == key).all(axis=2), 0, maxval).astype(colour.dtype)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """CMYK to RGB through the embedded profile when there is one (to sRGB, whose profile is then carried)."""
    if icc:
        try:
            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB")
            notes.append("CMYK converted to sRGB through its ICC profile")
            return rgb, ImageCms.ImageCmsProfile(srgb).tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    notes.append("CMYK converted to RGB without a colour profile (colours are approximate)")
    return im.convert("RGB"), None


def _decode_animation(im: Image.Image, header: _Header, notes: list[str]) -> tuple[list[Frame], bool, int]:
    if header.format == "PNG" and header.png_bit_depth == 16 and header.png_colour_type != 0:
        notes.append("16-bit animated PNG read at 8 bits")
    frames, all_grey = [], True
    for index in range(header.n_frames):
        im.seek(index)
        pixels = _pixels_from_pillow(im)  # loads the frame, which sets its duration in im.info
        pixels.oriented = _pillow_oriented(im, header.orientation)
        duration = im.info.get("duration")
        all_grey &= pixels.grey
        frames.append(_to_frame(pixels, header.orientation, None if duration is None else round(duration)))
    if any(f.alpha is not None for f in frames):
        if all(f.alpha is None or f.alpha.min() >= 1.0 for f in frames):
            for f in frames:  # Pillow hands out RGBA frames for GIFs without any transparent pixel
                f.alpha = None
        else:
            for f in frames:
                if f.alpha is None:
                    f.alpha = np.ones(f.rgb.shape[:2], np.float32)
    # Animated outputs are 8-bit; frames decoded from 16-bit grey keep their precision as floats.
    return frames, all_grey, 8


def _tiff_bits(im: Image.Image) -> int:
    bits = getattr(im, "tag_v2", {}).get(258, 8)
    return max(bits) if isinstance(bits, tuple) else int(bits)


def _read_png16(path: Path, orientation: int) -> _Pixels:
    """A 16-bit colour or grey+alpha PNG, exactly."""
    try:
        arr, mode, trns, oriented = _read_16bit_pillow(path, "PNG", orientation)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return _read_png16_pypng(path)  # e.g. grey+alpha, which Pillow has no second unpacker for
    if mode == "RGBA":
        return _Pixels(arr[..., :3], arr[..., 3], oriented=oriented)
    return _Pixels(arr, _colour_key_alpha(arr, trns), oriented=oriented)


def _read_16bit_pillow(path: Path, fmt: str, orientation: int) -> tuple[np.ndarray, str, object, bool]:
    """Decode a 16-bit RGB(A) PNG or TIFF exactly with Pillow's own (C) decoder.

    Pillow unpacks 16-bit colour to 8 bits by keeping the high byte of each sample. Decoding a second time with
    the byte order of the unpacker swapped keeps the low bytes instead; together they are the exact samples.
    This is 15x faster than pypng on a Paeth-filtered PNG (whose filters pypng undoes byte by byte in Python).
    Raises ValueError when the file is not laid out as expected (the callers then fall back).
    """
    planes, mode, trns, oriented = [], "", None, False
    for swap in (False, True):
        with _pil_open(path, (fmt,)) as im:
            tiles = []
            for tile in im.tile:
                args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
                raw = args[0]
                if not (isinstance(raw, str) and re.fullmatch(r"RGBA?;16[BLN]", raw)):
                    raise ValueError(f"raw mode {raw!r}")
                order = raw[-1] if raw[-1] != "N" else ("L" if sys.byteorder == "little" else "B")
                if swap:
                    order = "B" if order == "L" else "L"
                new = (raw[:-1] + order, *args[1:])
                tiles.append(tile._replace(args=new if isinstance(tile.args, tuple) else new[0]))
            im.tile = tiles
            im.load()
            mode, trns = im.mode, im.info.get("transparency")
            oriented = _pillow_oriented(im, orientation)
            planes.append(np.asarray(im).astype(np.uint16))
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"mode {mode}")
    return (planes[0] << 8) | planes[1], mode, trns, oriented


def _read_png16_pypng(path: Path) -> _Pixels:
    import png  # pypng: pure Python, only for the 16-bit layouts Pillow cannot decode exactly

    reader = png.Reader(filename=str(path))
    width, height, rows, info = reader.read()
    planes = info["planes"]
    arr = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    if info["alpha"]:
        return _Pixels(arr[..., :-1], arr[..., -1])
    return _Pixels(arr, _colour_key_alpha(arr, info.get("transparent")))


def _read_tiff16(path: Path, im: Image.Image, orientation: int) -> _Pixels:
    """A 16-bit TIFF through tifffile; LZW and JPEG need imagecodecs there, so fall back to Pillow's decoders."""
    try:
        return _read_tiff16_tifffile(path)
    except _Unsupported:
        raise
    except Exception as first:  # noqa: BLE001 - the fallbacks below decide; the first cause is reported
        if im.mode.startswith("I;16"):
            pixels = _pixels_from_pillow(im)  # Pillow reads 16-bit grey exactly
            pixels.oriented = _pillow_oriented(im, orientation)
            return pixels
        try:
            arr, mode, _, oriented = _read_16bit_pillow(path, "TIFF", orientation)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise first from None
        alpha = arr[..., 3] if mode == "RGBA" else None
        return _Pixels(arr[..., :3], alpha, oriented=oriented)


def _read_tiff16_tifffile(path: Path) -> _Pixels:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        arr = page.asarray()
        axes, photometric, extra = page.axes, int(page.photometric), tuple(int(e) for e in page.extrasamples)
    if arr.dtype != np.uint16:
        raise _Unsupported(f"TIFF samples of type {arr.dtype} are not supported")
    if arr.ndim == 2:
        arr = arr[..., None]
    elif axes.startswith("S"):  # planar configuration: samples first
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 0:  # MINISWHITE
        arr = 65535 - arr
    elif photometric not in (1, 2):
        raise _Unsupported(f"16-bit TIFF with photometric interpretation {photometric} is not supported")
    n_colour = 3 if photometric == 2 else 1
    colour = arr[..., :n_colour]
    if arr.shape[2] > n_colour:
        associated = bool(extra) and extra[0] == 1
        return _Pixels(colour, arr[..., n_colour], premultiplied=associated)
    return _Pixels(colour, None)


def _carried_exif(header: _Header) -> bytes | None:
    """The source EXIF, "Exif\\0\\0"-prefixed, with Orientation 1; the original bytes when nothing changes."""
    exif = header.exif
    if not len(exif):
        return None
    if header.format == "TIFF":  # TIFF tags are the image's own layout; keep only descriptive ones
        kept = Image.Exif()
        for tag in _TIFF_EXIF_TAGS:
            if tag in exif:
                kept[tag] = exif.get_ifd(tag) if tag in (0x8769, 0x8825) else exif[tag]
        if _ORIENTATION in exif:
            kept[_ORIENTATION] = 1
        return kept.tobytes() if len(kept) else None
    if exif.get(_ORIENTATION, 1) != 1:
        exif[_ORIENTATION] = 1
        return exif.tobytes()
    raw = header.exif_raw
    if raw:
        return raw if raw.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + raw
    return exif.tobytes()


# ------------------------------------------------------------------------------------------- pixel helpers


def fill_transparent(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Colour for (near-)transparent pixels, pulled in from their visible neighbours; other pixels unchanged.

    The colour under alpha 0 is arbitrary (often black). An SR model mixes each pixel with its neighbours, so that
    colour would bleed into the visible edge as a dark fringe once alpha is re-applied. Pull-push (an alpha-weighted
    image pyramid, averaged down, then interpolated back up) gives every transparent pixel the colour of the
    nearest visible ones. Pixels with alpha of at least one 8-bit step keep their colour exactly; below that the
    fill is blended in, so the few 16-bit sub-step alphas do not carry stray colour.
    """
    if alpha is None:
        return rgb
    keep = np.clip(alpha.astype(np.float32) * 255.0, 0.0, 1.0)
    if keep.min() >= 1.0:
        return rgb
    filled = _pull_push(rgb.astype(np.float32, copy=False), alpha.astype(np.float32, copy=False))
    k = keep[..., None]
    return np.where(k >= 1.0, rgb, k * rgb + (1.0 - k) * filled).astype(np.float32, copy=False)


def _pull_push(rgb: np.ndarray, weight: np.ndarray) -> np.ndarray:
    # Pull: premultiplied colour and weight summed over 2x2 blocks; a weight above 1 is normalised to 1,
    # so a fully covered coarse pixel is as trusted as an opaque fine one.
    levels = [(rgb * weight[..., None], np.clip(weight, 0.0, 1.0))]
    while max(levels[-1][1].shape) > 1:
        colour, w = levels[-1]
        colour, w = _sum2x2(colour), _sum2x2(w)
        norm = np.maximum(w, 1.0)
        levels.append((colour / norm[..., None], w / norm))
    # Push: at each level, colour = own premultiplied colour + (1 - own weight) x the coarser level's colour.
    colour, w = levels[-1]
    result = np.divide(colour, w[..., None], out=np.zeros_like(colour), where=w[..., None] > 0)
    for colour, w in reversed(levels[:-1]):
        result = colour + (1.0 - w)[..., None] * _upsample2x(result, w.shape)
    return result


def _sum2x2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    if h % 2 or w % 2:  # zero padding: padded pixels have weight 0, so they add nothing
        a = np.pad(a, [(0, h % 2), (0, w % 2)] + [(0, 0)] * (a.ndim - 2))
    return a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]


def _upsample2x(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear 2x enlargement (edge-clamped), cropped to ``shape``."""
    for axis, size in enumerate(shape):
        a = np.moveaxis(a, axis, 0)
        prev = np.concatenate([a[:1], a[:-1]])
        nxt = np.concatenate([a[1:], a[-1:]])
        out = np.empty((2 * a.shape[0], *a.shape[1:]), a.dtype)
        out[0::2] = 0.75 * a + 0.25 * prev
        out[1::2] = 0.75 * a + 0.25 * nxt
        a = np.moveaxis(out[:size], 0, axis)
    return a


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) grey from the RGB result of a grey source: the mean of the three channels.

    The three input channels were equal, so each output channel is an estimate of the same grey value and equal
    weights average out most of the model's per-channel differences; Rec.601 weights would let green dominate
    for no reason. Float input gives float32; integer input gives the rounded mean in the same dtype.
    """
    if np.issubdtype(rgb.dtype, np.integer):
        return ((rgb.astype(np.uint32).sum(axis=-1) + 1) // 3).astype(rgb.dtype)
    return rgb.mean(axis=-1, dtype=np.float32)


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Alpha plane resized to ``size`` = (width, height) with Lanczos, clipped back into [0, 1]."""
    plane = Image.fromarray(np.ascontiguousarray(alpha, dtype=np.float32))
    out = np.asarray(plane.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] samples to uint8/uint16 by clipping and rounding (no dithering); NaN becomes 0.

    Integer input is passed through, or rescaled between 8 and 16 bits with rounding.
    """
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    if values.dtype == dtype:
        return values
    if values.dtype == np.uint8:
        return values.astype(np.uint16) * 257
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    out = np.clip(values, 0.0, 1.0)
    np.nan_to_num(out, copy=False, nan=0.0)
    out *= float(np.iinfo(dtype).max)
    return np.rint(out, out=out).astype(dtype)


# --------------------------------------------------------------------------------------------------- writing


def format_of_extension(ext: str) -> str | None:
    """The Pillow format a file extension stands for (``"jpeg"`` -> ``"JPEG"``), or ``None``."""
    return _FORMAT_ALIASES.get(ext.lower().lstrip("."))


def output_format_for(
    decoded: DecodedImage | ImageFacts, requested_format: str | None, alpha_kept: bool
) -> OutputFormat:
    """The format to write the result of ``decoded`` (or of a file known by its ``ImageFacts``) in: the source's
    own unless ``requested_format`` names another.

    JPEG and BMP cannot store transparency: with ``alpha_kept`` the result is written as PNG instead, and ``note``
    says so (and how to keep the format). ``note`` also reports 16 bits written as 8. An animated source with a
    still-only format raises ``ImageWriteError``; an unknown format name raises ``UsageError``.
    """
    if requested_format is None:
        fmt = _SOURCE_TO_OUTPUT.get(decoded.format, decoded.format)
        if fmt not in WRITE_FORMATS:
            fmt = "PNG"
    else:
        fmt = _FORMAT_ALIASES.get(requested_format.lower().lstrip("."), "")
        if not fmt:
            raise UsageError(f"unknown output format {requested_format!r} (choose png, jpg, webp, tiff, bmp or gif)")
    notes = []
    if decoded.animated and fmt not in ANIMATED_FORMATS:
        raise ImageWriteError(
            f"{decoded.path}: animated ({decoded.n_frames} frames) and {fmt} cannot store animation; "
            "choose gif, webp or png"
        )
    if alpha_kept and fmt in NO_ALPHA_FORMATS:
        notes.append(f"{fmt} cannot store transparency, so PNG is written (use --alpha drop to keep {fmt})")
        fmt = "PNG"
    elif alpha_kept and fmt == "GIF" and decoded.format != "GIF":
        notes.append("GIF keeps only fully transparent or opaque pixels")
    if decoded.bit_depth == 16 and (fmt not in _16BIT_FORMATS or decoded.animated):
        notes.append(f"16-bit source written at 8 bits ({fmt}{' animation' if decoded.animated else ''})")
    source_ext = decoded.path.suffix.lower().lstrip(".")
    ext = source_ext if _FORMAT_ALIASES.get(source_ext) == fmt and source_ext != "apng" else _EXTENSION[fmt]
    return OutputFormat(fmt, ext, "; ".join(notes) or None)


def encode_image(
    dest: str | Path | BinaryIO,
    frames: list[Frame],
    *,
    grey: bool,
    bit_depth: int,
    fmt: str,
    quality: int | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    keep_metadata: bool = False,
    loop: int | None = None,
) -> None:
    """Encode ``frames`` as ``fmt`` (a Pillow format name) into ``dest`` (a path or a binary file).

    Frame arrays may be float in [0, 1] or already-quantised uint8/uint16. ``grey`` writes one channel (the mean
    of RGB); ``bit_depth`` 16 is kept for still PNG and TIFF, everything else is 8-bit. ``quality`` (1-100,
    default 95) applies to JPEG and WebP, where 100 means lossless WebP. The ICC profile is embedded wherever
    the format allows it and it matches the written colour space; EXIF only with ``keep_metadata`` (not in
    16-bit TIFF, which tifffile writes without an EXIF directory). Several frames make an animation (GIF, WebP,
    PNG) with their durations and ``loop``. Raises ValueError for combinations the format cannot hold; use
    ``output_format_for`` first.
    """
    fmt = fmt.upper()
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"cannot write format {fmt}")
    if not frames:
        raise ValueError("no frames to write")
    if len(frames) > 1 and fmt not in ANIMATED_FORMATS:
        raise ValueError(f"{fmt} cannot store {len(frames)} frames")
    has_alpha = any(f.alpha is not None for f in frames)
    if has_alpha and fmt in NO_ALPHA_FORMATS:
        raise ValueError(f"{fmt} cannot store an alpha channel")
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, not {quality}")
    depth = 16 if bit_depth == 16 and fmt in _16BIT_FORMATS and len(frames) == 1 else 8
    planes = [_frame_planes(f, grey, depth, has_alpha) for f in frames]
    written_grey = grey and fmt != "WEBP"  # WebP has no grey mode: Pillow writes the grey as RGB
    icc = icc_profile if icc_profile and _icc_space(icc_profile) == ("GRAY" if written_grey else "RGB ") else None
    exif_out = exif if keep_metadata and exif else None

    if depth == 16:
        colour, alpha = planes[0]
        with _binary_out(dest) as fh:
            if fmt == "PNG":
                _write_png16(fh, colour, alpha, icc, exif_out)
            else:
                _write_tiff16(fh, colour, alpha, icc)
        return

    images = [Image.fromarray(c if a is None else np.dstack([c, a])) for c, a in planes]
    options: dict[str, object] = {}
    if icc and fmt != "GIF" and fmt != "BMP":
        options["icc_profile"] = icc
    if exif_out and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["exif"] = exif_out
    q = DEFAULT_QUALITY if quality is None else quality
    if fmt == "PNG":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    elif fmt == "JPEG":
        options.update(quality=q, subsampling="4:4:4" if q >= 90 else "4:2:0")
    elif fmt == "WEBP":
        options.update({"lossless": True, **WEBP_LOSSLESS_EFFORT} if q == 100 else {"quality": q})
    elif fmt == "TIFF":
        options["compression"] = "tiff_adobe_deflate"
    if len(images) > 1:
        options.update(
            save_all=True,
            append_images=images[1:],
            duration=[100 if f.duration_ms is None else f.duration_ms for f in frames],
        )
        if fmt == "GIF":
            if loop is not None:
                options["loop"] = loop
            if has_alpha:
                options["disposal"] = 2  # each frame is a full picture: clear before drawing the next
        else:
            options["loop"] = 1 if loop is None else loop  # APNG/WebP: 0 loops forever, None plays once
    with _binary_out(dest) as fh:
        images[0].save(fh, format=fmt, **options)


@contextlib.contextmanager
def _binary_out(dest: str | Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(dest, (str, os.PathLike)):
        with open(dest, "wb") as fh:
            yield fh
    else:
        yield dest


def _frame_planes(frame: Frame, grey: bool, depth: int, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    colour = frame.rgb
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    if grey and colour.ndim == 3:
        colour = luma(colour)
    elif not grey and colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=2)
    colour = quantize(colour, depth)
    if not has_alpha:
        return colour, None
    alpha = frame.alpha if frame.alpha is not None else np.ones(colour.shape[:2], np.float32)
    return colour, quantize(alpha, depth)


def _icc_space(icc: bytes) -> str:
    """The data colour space signature of an ICC profile ('RGB ', 'GRAY', 'CMYK', ...)."""
    return icc[16:20].decode("latin-1") if len(icc) >= 20 else ""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png16(
    fh: BinaryIO, colour: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None
) -> None:
    """A 16-bit PNG (grey, grey+alpha, RGB, RGBA), written directly: Pillow has no 16-bit colour modes."""
    planes = colour[..., None] if colour.ndim == 2 else colour
    if alpha is not None:
        planes = np.concatenate([planes, alpha[..., None]], axis=2)
    h, w, c = planes.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc:
        fh.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        fh.write(_png_chunk(b"eXIf", exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif))
    bpp = 2 * c
    compressor = zlib.compressobj(PNG_COMPRESS_LEVEL)
    step = max(1, (1 << 22) // (w * bpp + 1))  # ~4 MiB of rows at a time bounds the extra memory
    for top in range(0, h, step):
        raw = planes[top : top + step].astype(">u2").view(np.uint8).reshape(-1, w * bpp)
        rows = np.empty((raw.shape[0], 1 + w * bpp), np.uint8)
        rows[:, 0] = 1  # filter "Sub": each byte minus the same byte of the pixel to its left (mod 256)
        rows[:, 1 : 1 + bpp] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=rows[:, 1 + bpp :])
        data = compressor.compress(rows.tobytes())
        if data:
            fh.write(_png_chunk(b"IDAT", data))
    fh.write(_png_chunk(b"IDAT", compressor.flush()))
    fh.write(_png_chunk(b"IEND", b""))


def _write_tiff16(fh: BinaryIO, colour: np.ndarray, alpha: np.ndarray | None, icc: bytes | None) -> None:
    import tifffile

    data = colour if alpha is None else np.concatenate([colour.reshape(*colour.shape[:2], -1), alpha[..., None]], 2)
    options: dict[str, object] = {
        "photometric": "minisblack" if colour.ndim == 2 else "rgb",
        "compression": "zlib",
        "compressionargs": {"level": PNG_COMPRESS_LEVEL},
        "metadata": None,
    }
    if data.ndim == 3:
        options["planarconfig"] = "contig"
    if alpha is not None:
        options["extrasamples"] = ["unassalpha"]
    if icc:
        options["iccprofile"] = icc
    buffer = io.BytesIO()  # tifffile wants a named file, which an fdopen'ed descriptor is not
    tifffile.imwrite(buffer, data, **options)
    fh.write(buffer.getbuffer())


def write_image_atomic(
    path: str | Path,
    frames: list[Frame],
    *,
    grey: bool,
    bit_depth: int,
    fmt: str,
    quality: int | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    keep_metadata: bool = False,
    loop: int | None = None,
) -> None:
    """``encode_image`` into ``.<name>.<random>.partial`` beside ``path``, fsync, then rename onto ``path``.

    A crash or error never leaves a half-written file under the final name (which a later ``--skip-existing``
    would take as done); the temporary name starts with a dot and has no image extension, so folder walks skip
    it, and it is removed on any failure. An existing ``path`` is replaced. Disk errors raise ``ImageWriteError``.
    """
    path = Path(path)
    try:
        with atomic_writer(path) as fh:
            encode_image(
                fh,
                frames,
                grey=grey,
                bit_depth=bit_depth,
                fmt=fmt,
                quality=quality,
                icc_profile=icc_profile,
                exif=exif,
                keep_metadata=keep_metadata,
                loop=loop,
            )
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or _describe(exc)})") from None
