"""Hostile and odd image files, built in memory (nothing binary is committed).

Used by tests/generation/test_uploads.py (the upload service) and test_png_info.py (the view).
Files Pillow cannot write (16-bit RGB, a header claiming enormous dimensions) are put together
chunk by chunk with `png_from_chunks`.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

from PIL import Image, PngImagePlugin

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_from_chunks(*chunks: tuple[bytes, bytes]) -> bytes:
    return PNG_MAGIC + b"".join(png_chunk(kind, data) for kind, data in chunks)


def ihdr(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2) -> tuple[bytes, bytes]:
    return b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)


def chunk_types(png: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    assert png.startswith(PNG_MAGIC)
    types, at = [], len(PNG_MAGIC)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        types.append(png[at + 4 : at + 8])
        at += 12 + length
    return types


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def picture(size=(32, 24), colour=(200, 40, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


# -- plain files -----------------------------------------------------------------------------------


def png_rgb(size=(32, 24)) -> bytes:
    return encoded(picture(size), "PNG")


def jpeg_rgb(size=(32, 24)) -> bytes:
    return encoded(picture(size), "JPEG", quality=95)


def webp_rgb(size=(32, 24)) -> bytes:
    return encoded(picture(size), "WEBP", lossless=True)


def one_by_one() -> bytes:
    return encoded(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")


# -- odd but fine ------------------------------------------------------------------------------------


def png_16bit_grey() -> bytes:
    """A 16-bit greyscale gradient: the top row 0..65280 in steps of 256, the bottom row mid grey."""
    width = 256
    rows = [struct.pack(">" + "H" * width, *(x * 256 for x in range(width))), struct.pack(">" + "H" * width, *[32768] * width)]
    raw = b"".join(b"\x00" + row for row in rows)
    return png_from_chunks(ihdr(width, 2, bit_depth=16, colour_type=0), (b"IDAT", zlib.compress(raw)), (b"IEND", b""))


def png_16bit_rgb() -> bytes:
    """16-bit RGB, 4x1: red, green, blue, mid grey."""
    colours = [(65535, 0, 0), (0, 65535, 0), (0, 0, 65535), (32896, 32896, 32896)]
    row = b"\x00" + b"".join(struct.pack(">HHH", *colour) for colour in colours)
    return png_from_chunks(ihdr(4, 1, bit_depth=16, colour_type=2), (b"IDAT", zlib.compress(row)), (b"IEND", b""))


def cmyk_jpeg() -> bytes:
    """Pure red in CMYK (no cyan, full magenta and yellow, no black)."""
    return encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)


def exif_rotated_jpeg() -> bytes:
    """40x20, red on the left half and blue on the right, EXIF orientation 6 (shown turned 90°
    clockwise: 20x40 with red on top), with a camera make and a GPS block to be stripped."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPSInfo
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


def png_with_metadata() -> bytes:
    """A PNG with a 2 MB tEXt chunk, a zTXt, an iTXt (non-Latin), XMP, EXIF and an sRGB ICC profile."""
    from PIL import ImageCms

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (2 * 1024 * 1024))
    info.add_text("Software", "private tool", zip=True)
    info.add_itxt("Description", "秘密の説明 — secret", lang="ja")
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>')
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encoded(picture(), "PNG", pnginfo=info, exif=exif.tobytes(), icc_profile=icc)


def png_with_broken_icc() -> bytes:
    return encoded(picture(), "PNG", icc_profile=b"not a profile at all" * 10)


def palette_png_with_transparency() -> bytes:
    """4x1 palette image: index 0 (transparent), 1 red, 2 green, 3 blue."""
    image = Image.new("P", (4, 1))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    image.putdata([0, 1, 2, 3])
    return encoded(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    image = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    image.paste((0, 128, 0, 255), (0, 0, 4, 8))
    return encoded(image, "PNG")


def png_with_html_appended() -> bytes:
    """A polyglot: a valid PNG with an HTML page (script included) after IEND."""
    return png_rgb() + b"<html><body><script>alert(document.cookie)</script></body></html>"


def mpo_jpeg() -> bytes:
    """A multi-picture JPEG (as some cameras write): red primary picture, blue second one."""
    first, second = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    return encoded(first, "MPO", save_all=True, append_images=[second])


# -- refused ---------------------------------------------------------------------------------------


def truncated_png() -> bytes:
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    data = encoded(noisy, "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    data = encoded(noisy, "JPEG")
    return data[: len(data) // 2]


def header_claims_enormous_size() -> bytes:
    """A 60-byte PNG whose header says 100000x100000 (10 gigapixels)."""
    return png_from_chunks(ihdr(100_000, 100_000), (b"IDAT", zlib.compress(b"\x00" * 64)), (b"IEND", b""))


def decompression_bomb() -> bytes:
    """A real, valid 5000x5000 greyscale PNG of zeros: about 25 KB on disk, 25 megapixels decoded."""
    return encoded(Image.new("L", (5000, 5000), 0), "PNG", optimize=False, compress_level=9)


def gif_named_png() -> bytes:
    return encoded(picture(), "GIF")


def tiff_named_png() -> bytes:
    return encoded(picture(), "TIFF")


def eps_named_png() -> bytes:
    return encoded(picture(), "EPS")


def svg_with_script() -> bytes:
    return (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b"<script>alert(1)</script><rect width='10' height='10'/></svg>")


def html_named_png() -> bytes:
    return b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def animated_png() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)


def png_magic_then_garbage() -> bytes:
    return PNG_MAGIC + bytes(range(256)) * 4


def webp_magic_then_garbage() -> bytes:
    return b"RIFF\x00\x01\x00\x00WEBPVP8 " + bytes(range(256))


# -- with generation parameters (PNG info) -----------------------------------------------------------


def png_with_text(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return encoded(picture(), "PNG", pnginfo=info)


A1111_PARAMETERS = (
    "a lighthouse on a cliff, (storm:1.2), dramatic light\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.4, "
    'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.9.4'
)


def comfyui_prompt() -> dict:
    """ComfyUI's API-format graph (the "prompt" chunk) of its default text-to-image workflow."""
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 156680208700286, "steps": 24, "cfg": 7.5, "sampler_name": "euler_ancestral",
            "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 448, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox in the snow, watercolour", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def comfyui_png() -> bytes:
    return png_with_text(prompt=json.dumps(comfyui_prompt()), workflow=json.dumps({"nodes": [], "links": []}))
