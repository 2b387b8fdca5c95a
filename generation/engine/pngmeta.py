"""PNG files with an A1111-compatible "parameters" text chunk. Pillow only, torch-free."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

PARAMETERS_KEY = "parameters"


def encode_png(image: Image.Image, infotext: str, *, compress_level: int = 6) -> bytes:
    """PNG bytes of ``image`` with ``infotext`` in a "parameters" chunk.

    Pillow writes a tEXt chunk when the text is Latin-1 and an iTXt chunk otherwise
    (prompts in other scripts); A1111 does the same and both read back with read_parameters.
    """
    meta = PngImagePlugin.PngInfo()
    meta.add_text(PARAMETERS_KEY, infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta, compress_level=compress_level)
    return buf.getvalue()


def read_parameters(png: bytes) -> str | None:
    """The "parameters" text of a PNG, or None when it has none."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()  # text chunks after the image data are only read on load
        return getattr(im, "text", {}).get(PARAMETERS_KEY)
