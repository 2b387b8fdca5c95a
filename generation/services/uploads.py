"""The one way in for every uploaded image (canvas sources and masks, later training images).

What comes out is always a fresh PNG with nothing in it but pixels: the upload is recognised by
its content (magic bytes, then Pillow restricted to that one format; never the file name or the
Content-Type), read with a bound on bytes, checked against the pixel limit from its header before
a single pixel is decoded, turned upright by its EXIF orientation, converted to sRGB when it
carries an ICC profile, and re-encoded without EXIF, ICC, XMP or text chunks.

Decisions (docs/canvas.md, "Uploads"):
- Modes: RGB, or RGBA when the picture has any transparency (alpha channel, palette or colour-key
  transparency). Alpha is kept, not flattened: a mask drawn on a transparent layer means its
  opaque pixels, and the engine flattens a source's alpha onto grey itself (engine.inpainting).
  16-bit PNGs are scaled to 8 bits (not clipped); CMYK JPEGs go through their ICC profile when
  they have one, else Pillow's conversion (which also undoes Adobe's inverted CMYK).
- Animated PNG and WebP are refused: the canvas edits one picture, and quietly keeping frame 1
  would hand the user something other than what they chose. A multi-picture JPEG (MPO, as some
  cameras and phones write) is not an animation: its primary picture is the photo, and is kept.
- Refusals raise UploadRefused with a message fit for the user and the HTTP status to answer
  (413 when the file is too large in bytes or pixels, 400 otherwise).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from PIL import Image, ImageCms, ImageOps

logger = logging.getLogger(__name__)

ACCEPTED = "PNG, JPEG or WebP"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Formats that are refused by name when recognised, so the message says what the file really is.
_OTHER_SIGNATURES = (
    (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"%!PS", "a PostScript (EPS) file"), (b"\xc5\xd0\xd3\xc6", "a PostScript (EPS) file"),
    (b"%PDF", "a PDF document"), (b"BM", "a BMP image"), (b"\x00\x00\x01\x00", "an icon file"),
    (b"PK\x03\x04", "a ZIP archive"),
)


class UploadRefused(Exception):
    """An upload that is not accepted; ``message`` can be shown to the user as it is."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status  # 413: too large (bytes or pixels); 400: anything else


@dataclass(frozen=True)
class UploadedImage:
    png: bytes  # re-encoded: RGB or RGBA, 8 bits, upright, sRGB, no metadata at all
    width: int  # of the picture in `png` (after the EXIF rotation)
    height: int
    format: str  # of the original: "PNG", "JPEG" or "WEBP"


def upload_read_image(*, data: bytes | BinaryIO) -> UploadedImage:
    """Check and re-encode one uploaded image. ``data``: bytes, or a file object such as Django's
    UploadedFile (read at most STUDIO_UPLOAD_MAX_BYTES + 1 bytes). Raises UploadRefused."""
    image, _text = _read(data)
    return image


def upload_read_png_text(*, data: bytes | BinaryIO) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt: keyword -> text) of an uploaded PNG as it was sent, for
    reading generation parameters. The file passes every check upload_read_image makes; anything
    but a PNG is refused. Raises UploadRefused."""
    _image, text = _read(data, only_png=True)
    return text


# -- reading ---------------------------------------------------------------------------------------


def _read(data: bytes | BinaryIO, *, only_png: bool = False) -> tuple[UploadedImage, dict[str, str]]:
    raw = _read_bounded(data, settings.STUDIO_UPLOAD_MAX_BYTES)
    kind = _sniff(raw)
    if only_png and kind != "PNG":
        what = {"JPEG": "a JPEG", "WEBP": "a WebP"}.get(kind, "not a PNG")
        raise UploadRefused(f"Parameters are read from PNG files only; this file is {what}.")
    return _decode(raw, kind)


def _read_bounded(data: bytes | BinaryIO, max_bytes: int) -> bytes:
    """The file's bytes, never more than max_bytes + 1 of them in memory."""
    too_large = UploadRefused(f"The file is larger than {_size_text(max_bytes)}.", status=413)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        declared = getattr(data, "size", None)  # Django's UploadedFile knows it before any read
        if isinstance(declared, int) and declared > max_bytes:
            raise too_large
        if getattr(data, "seekable", lambda: False)():
            data.seek(0)  # a form may have looked at the file already
        raw = _read_at_most(data, max_bytes + 1)
    if len(raw) > max_bytes:
        raise too_large
    if not raw:
        raise UploadRefused("The file is empty.")
    return raw


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes (a raw stream may return fewer than asked for before its end)."""
    chunks, remaining = [], limit
    while remaining > 0:
        chunk = stream.read(min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _sniff(raw: bytes) -> str:
    """PNG, JPEG or WEBP from the magic bytes, or UploadRefused naming what the file seems to be."""
    if raw.startswith(_PNG_MAGIC):
        return "PNG"
    if raw.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    what = next((name for magic, name in _OTHER_SIGNATURES if raw.startswith(magic)), None)
    if what is None:
        head = raw[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if head.startswith(b"<"):
            what = "an SVG image" if b"<svg" in raw[:4096].lower() else "an HTML or XML document"
    found = f"This file is {what}" if what else "This file is not an image we can read"
    raise UploadRefused(f"{found}: upload a {ACCEPTED} image.")


def _decode(raw: bytes, kind: str) -> tuple[UploadedImage, dict[str, str]]:
    max_pixels = settings.STUDIO_UPLOAD_MAX_PIXELS
    # Pillow's bomb check only warns below twice its limit: make it an error. (The filter is
    # process-wide while it is set, so under threads it is a second line of defence; the first is
    # the explicit pixel check from the header below, which is stricter than Pillow's limit.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(raw), formats=[kind]) as im:
                _check_pixels(im.size, max_pixels)
                if kind != "JPEG" and getattr(im, "n_frames", 1) > 1:
                    raise UploadRefused(f"Animated images are not accepted: upload a single picture ({ACCEPTED}).")
                im.load()  # the first (MPO: primary) picture; PNG text after the image data is read here too
                text = {str(key): str(value) for key, value in getattr(im, "text", {}).items()} if kind == "PNG" else {}
                picture = _upright(im)
                _check_pixels(picture.size, max_pixels)
                picture = _normalised(picture, icc=im.info.get("icc_profile"))
        except UploadRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadRefused(f"The image has too many pixels (the limit is {_pixels_text(max_pixels)}).",
                                status=413) from None
        except MemoryError:
            raise UploadRefused("The image is too large to process.", status=413) from None
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                ZeroDivisionError):
            raise UploadRefused(f"The image could not be read: the file is damaged or incomplete. "
                                f"Upload a {ACCEPTED} image.") from None
        except Exception:  # a decoder bug on hostile input must still not take the process down
            logger.warning("Unexpected error decoding an uploaded %s", kind, exc_info=True)
            raise UploadRefused(f"The image could not be read. Upload a {ACCEPTED} image.") from None
    return UploadedImage(png=_encode(picture), width=picture.width, height=picture.height, format=kind), text


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise UploadRefused("The image has no pixels.")
    if width * height > max_pixels:
        raise UploadRefused(
            f"The image is {width}×{height} pixels; the limit is {_pixels_text(max_pixels)}.", status=413
        )


# -- the picture ----------------------------------------------------------------------------------


def _upright(im: Image.Image) -> Image.Image:
    """Turned as its EXIF orientation says; an unreadable EXIF block leaves it as it is."""
    try:
        return ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, struct.error, KeyError, TypeError, IndexError):
        return im


def _has_alpha(im: Image.Image) -> bool:
    """Whether any pixel is at all transparent. An alpha channel that is opaque everywhere (what
    a browser canvas and many editors export) is dropped: keeping it would make a mask's alpha,
    not its colours, say what to repaint."""
    if not (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
        return False
    lowest, _ = im.convert("RGBA").getchannel("A").getextrema()
    return lowest < 255


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _normalised(im: Image.Image, *, icc: bytes | None) -> Image.Image:
    """8-bit RGB or RGBA in sRGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = im.convert("I").point(lambda value: value * (1 / 256)).convert("L")  # 16-bit grey: scale, don't clip
    target = "RGBA" if _has_alpha(im) else "RGB"
    if icc:
        converted = _to_srgb(im, icc, target)
        if converted is not None:
            return converted
    return im.convert(target)


def _to_srgb(im: Image.Image, icc: bytes, target: str) -> Image.Image | None:
    """The picture through its ICC profile into sRGB, or None when the profile does not fit it."""
    source = im if im.mode in ("RGB", "RGBA", "CMYK") else im.convert(target)
    if source.mode == "RGBA" and target == "RGB":
        source = source.convert("RGB")
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(source, profile, _SRGB, outputMode=target)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a broken profile, or one for another colour space: the plain conversion follows


def _encode(picture: Image.Image) -> bytes:
    clean = picture.copy()
    clean.info = {}  # Pillow would carry an ICC profile or transparency from info into the PNG
    buffer = io.BytesIO()
    # Level 3: half the time of the default 6 on a noisy 4096x4096 picture (seconds of a web
    # worker), files about 10% larger on photos.
    clean.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _size_text(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB" if count >= 1024 * 1024 else f"{count / 1024:g} KB"


def _pixels_text(count: int) -> str:
    side = int(count**0.5)
    return f"{side}×{side} pixels" if side * side == count else f"{count:,} pixels"
