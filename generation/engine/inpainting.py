"""The canvas's pixel work, around the diffusion itself: decode a source and a mask, blur the
mask, pre-fill the masked area, crop around the mask ("only masked"), pad a canvas for
outpainting, and composite the result over the source.

Pillow and numpy only (no torch), so the web process can build an outpaint canvas with the same
code the worker uses. Everything is in RGB uint8 / mask float32 in [0, 1].
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .contracts import MAX_SOURCE_PIXELS, GenerationRequest, InvalidRequest

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP"}


def _open(data: bytes, field: str) -> Image.Image:
    """Decode an image, refusing anything but PNG/JPEG/WebP and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(ACCEPTED_FORMATS))
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise InvalidRequest(field, f"{image.width}x{image.height} is more pixels than allowed")
            image.load()
    except InvalidRequest:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidRequest(field, f"is not a readable PNG, JPEG or WebP image ({exc})") from None
    return ImageOps.exif_transpose(image)


def load_source(data: bytes) -> Image.Image:
    image = _open(data, "init_image")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels have no colour worth keeping: flatten onto mid grey.
        background = Image.new("RGBA", image.size, (128, 128, 128, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def load_mask(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A binary mask (1.0 = repaint) of exactly `size`. A mask with transparency counts its
    painted (opaque) pixels; otherwise its brightness (>= 128) counts."""
    image = _open(data, "mask")
    if image.size != size:
        raise InvalidRequest("mask", f"is {image.width}x{image.height}; it must match the source ({size[0]}x{size[1]})")
    values = None
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() < 255:  # painted on a transparent layer; an opaque alpha says nothing
            values = alpha
    if values is None:
        values = np.asarray(image.convert("L"))
    mask = (values >= 128).astype(np.float32)
    if not mask.any():
        raise InvalidRequest("mask", "is empty: paint the area to repaint")
    return mask


def mask_image(mask: np.ndarray) -> Image.Image:
    """A float mask in [0, 1] as an 8-bit greyscale image (rounded)."""
    return Image.fromarray((mask * 255).round().astype(np.uint8), "L")


def blur_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """A1111's mask blur: a Gaussian blur of the binary mask (0 keeps the hard edge)."""
    if radius <= 0:
        return mask
    image = mask_image(mask).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.float32) / 255.0


def _push_pull(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Colours for every pixel from the weighted ones (push-pull hole filling): average 2x2 cells
    down to a level where no cell is empty, then come back up, each level keeping its own colour
    where it has one and taking the coarser level's elsewhere. `values` are premultiplied."""
    height, width = weight.shape
    own = values / np.maximum(weight, 1e-6)[..., None]
    if (weight > 0).all() or (height <= 1 and width <= 1):
        return own
    padded_h, padded_w = height + height % 2, width + width % 2
    v = np.zeros((padded_h, padded_w, values.shape[-1]), np.float64)
    w = np.zeros((padded_h, padded_w), np.float64)
    v[:height, :width], w[:height, :width] = values, weight
    coarse = _push_pull(v.reshape(padded_h // 2, 2, padded_w // 2, 2, -1).sum((1, 3)),
                        w.reshape(padded_h // 2, 2, padded_w // 2, 2).sum((1, 3)))
    up = coarse.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    alpha = np.clip(weight, 0, 1)[..., None]
    return own * alpha + up * (1 - alpha)


def fill_masked(source: Image.Image, mask: np.ndarray) -> Image.Image:
    """The masked area painted with the colours around it (A1111's "fill"), softly blurred, so the
    diffusion starts from the surroundings' colours instead of whatever was there (or black).
    Unmasked pixels are unchanged."""
    pixels = np.asarray(source, dtype=np.float64)
    keep = (np.asarray(mask) <= 0).astype(np.float64)
    if not keep.any():
        return source  # nothing around to take colours from
    filled = _push_pull(pixels * keep[..., None], keep).clip(0, 255).round().astype(np.uint8)
    smooth = np.asarray(Image.fromarray(filled, "RGB").filter(ImageFilter.GaussianBlur(8)), dtype=np.float64)
    out = np.where(keep[..., None] > 0, pixels, smooth)
    return Image.fromarray(out.round().astype(np.uint8), "RGB")


def composite(source: Image.Image, generated: Image.Image, mask: np.ndarray) -> Image.Image:
    """source * (1 - mask) + generated * mask: where the (blurred) mask is 0, the source's pixels
    come through exactly."""
    src = np.asarray(source, dtype=np.float32)
    gen = np.asarray(generated.resize(source.size, Image.Resampling.LANCZOS), dtype=np.float32)
    m = mask[..., None]
    out = src * (1.0 - m) + gen * m
    out = np.where(m == 0, src, out)  # exact, not merely close, outside the blur
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Crop:
    """The region of the source that "only masked" inpainting generates: (left, top, right, bottom)."""

    box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def crop_around_mask(mask: np.ndarray, padding: int, aspect: float) -> Crop:
    """The mask's bounding box grown by `padding`, then widened or heightened to `aspect`
    (width / height of the generation size), kept inside the image (A1111's "only masked")."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask > 0)
    left, right = max(int(xs.min()) - padding, 0), min(int(xs.max()) + 1 + padding, width)
    top, bottom = max(int(ys.min()) - padding, 0), min(int(ys.max()) + 1 + padding, height)
    w, h = right - left, bottom - top
    if w / h < aspect:
        w = min(round(h * aspect), width)
    else:
        h = min(round(w / aspect), height)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    left = int(min(max(round(cx - w / 2), 0), width - w))
    top = int(min(max(round(cy - h / 2), 0), height - h))
    return Crop((left, top, left + w, top + h))


def outpaint_canvas(source: Image.Image, *, left: int, top: int, right: int, bottom: int,
                    multiple: int = 8) -> tuple[Image.Image, Image.Image]:
    """The padded canvas and its mask for outpainting: the source extended by the given pixels on
    each side (the new size rounded up to `multiple`, the extra going right and bottom), the new
    area pre-filled with the colours of the source nearby (fill_masked; the edge pixels repeated
    where the source is too far away), and a mask that is white exactly there."""
    if min(left, top, right, bottom) < 0 or not any((left, top, right, bottom)):
        raise InvalidRequest("outpaint", "extend at least one side by a positive number of pixels")
    width = source.width + left + right
    height = source.height + top + bottom
    width += -width % multiple
    height += -height % multiple
    pixels = np.asarray(source.convert("RGB"))
    pad = ((top, height - source.height - top), (left, width - source.width - left), (0, 0))
    extended = np.pad(pixels, pad, mode="edge")
    mask = np.ones((height, width), dtype=np.float32)
    mask[top : top + source.height, left : left + source.width] = 0.0
    canvas = fill_masked(Image.fromarray(extended, "RGB"), mask)
    return canvas, mask_image(mask)


# --- A request's canvas, ready for the pipeline ------------------------------------------------

PREVIEW_MAX_SIDE = 256


@dataclass
class Canvas:
    """What img2img and inpaint run on, prepared from a request before the GPU is touched.

    `init` and `work_mask` are at the generation size (the request's width x height); `source`
    and `mask` are the whole picture, which the result is composited back into.
    """

    source: Image.Image
    init: Image.Image
    strength: float
    mask: np.ndarray | None = None  # blurred, whole source; None for img2img
    work_mask: Image.Image | None = None  # blurred, generation size, for the pipeline
    crop: Crop | None = None  # "only masked": the generated region of the source
    _preview_base: dict = field(default_factory=dict)

    def finish(self, generated: Image.Image) -> Image.Image:
        """The picture to keep: the generated pixels inside the mask, the source's outside."""
        if self.mask is None:
            return generated
        if self.crop is None:
            return composite(self.source, generated, self.mask)
        left, top, right, bottom = self.crop.box
        region = composite(self.source.crop(self.crop.box), generated, self.mask[top:bottom, left:right])
        result = self.source.copy()
        result.paste(region, (left, top))
        return result

    def preview(self, frames: np.ndarray) -> np.ndarray:
        """Preview frames of the whole picture, with the unmasked area as it will be."""
        if self.mask is None:
            return frames
        return np.stack([np.asarray(self._preview_one(Image.fromarray(frame))) for frame in frames])

    def _preview_one(self, frame: Image.Image) -> Image.Image:
        if self.crop is None:
            base, mask = self._scaled(frame.size)
            return composite(base, frame, mask)
        scale = min(PREVIEW_MAX_SIDE / max(self.source.size), frame.width / self.crop.size[0])
        size = (max(1, round(self.source.width * scale)), max(1, round(self.source.height * scale)))
        base, mask = self._scaled(size)
        box = tuple(round(v * scale) for v in self.crop.box)
        box = (box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1))
        region = composite(base.crop(box), frame, mask[box[1] : box[3], box[0] : box[2]])
        result = base.copy()
        result.paste(region, box[:2])
        return result

    def _scaled(self, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
        """The source and mask at a preview size, made once per size (a big source is not
        resized on every frame)."""
        if size not in self._preview_base:
            mask = mask_image(self.mask).resize(size, Image.Resampling.BILINEAR)
            self._preview_base[size] = (self.source.resize(size, Image.Resampling.BILINEAR),
                                        np.asarray(mask, dtype=np.float32) / 255.0)
        return self._preview_base[size]


def prepare_canvas(request: GenerationRequest, *, inpainting_model: bool = False) -> Canvas | None:
    """Decode and check a request's source and mask and build what the pipeline runs on; None for
    text to image on a regular model. Raises InvalidRequest with the offending field.

    An inpainting model (a 9-channel UNet) runs everything through its inpaint pipeline: text to
    image is inpainting a grey picture wholly masked at strength 1, image to image is inpainting
    the whole picture at the request's strength (what AUTOMATIC1111 does with such models).
    """
    size = (request.width, request.height)
    if request.mode == "txt2img":
        if not inpainting_model:
            return None
        grey = Image.new("RGB", size, (128, 128, 128))
        return _whole_picture(grey, strength=1.0)
    source = load_source(request.init_image)
    _check_strength(request)
    if request.mode == "img2img":
        init = source if source.size == size else source.resize(size, Image.Resampling.LANCZOS)
        if inpainting_model:
            return _whole_picture(init, strength=request.strength)
        return Canvas(source=init, init=init, strength=request.strength)
    if not request.only_masked and source.size != size:
        raise InvalidRequest("init_image", f"is {source.width}x{source.height}; inpainting the whole picture "
                             f"generates it at its own size, so the request must be {source.width}x{source.height}")
    binary = load_mask(request.mask, source.size)
    blurred = blur_mask(binary, request.mask_blur)
    crop = None
    work, work_binary, work_blurred = source, binary, blurred
    if request.only_masked:
        crop = crop_around_mask(binary, request.only_masked_padding, request.width / request.height)
        left, top, right, bottom = crop.box
        work = source.crop(crop.box).resize(size, Image.Resampling.LANCZOS)
        work_binary = _resize_mask(binary[top:bottom, left:right], size) > 0.5
        work_blurred = _resize_mask(blurred[top:bottom, left:right], size)
    init = fill_masked(work, work_binary) if request.masked_content == "fill" else work
    strength = 1.0 if request.masked_content == "latent_noise" else request.strength
    work_mask = mask_image(np.maximum(work_blurred, work_binary))
    return Canvas(source=source, init=init, strength=strength, mask=blurred, work_mask=work_mask, crop=crop)


def check_canvas(request: GenerationRequest) -> None:
    """Raise InvalidRequest if the worker would refuse this request's source or mask (the web
    checks a canvas form with the very code the worker runs)."""
    prepare_canvas(request)


def _whole_picture(image: Image.Image, *, strength: float) -> Canvas:
    full = np.ones((image.height, image.width), dtype=np.float32)
    return Canvas(source=image, init=image, strength=strength, mask=full, work_mask=Image.new("L", image.size, 255))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = mask_image(mask).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _check_strength(request: GenerationRequest) -> None:
    """diffusers runs int(steps * strength) steps of an img2img/inpaint request: none is an error."""
    if request.mode == "inpaint" and request.masked_content == "latent_noise":
        return
    if int(request.steps * request.strength) < 1:
        raise InvalidRequest("strength", f"{request.strength:g} of {request.steps} steps runs no step at all: "
                             "raise the strength or the steps")

