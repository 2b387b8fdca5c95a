"""Plain data that crosses the engine boundary, and request validation.

Torch-free on purpose: the web process imports this module to validate forms.
"""

from __future__ import annotations

from dataclasses import dataclass

# torch.compile modes a worker may compile its UNets with (engine.speed; STUDIO_TORCH_COMPILE).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DTYPES = ("fp32", "fp16", "bf16", "float32", "float16", "bfloat16")  # STUDIO_DTYPE

# Sampler key -> A1111 label. The label is what goes into the PNG infotext.
SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
}

MAX_PROMPT_CHARS = 1000
MIN_SIDE = 64
MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_IMAGES, MAX_IMAGES = 1, 4
MAX_SEED = 2**32 - 1  # A1111 seeds are 32-bit; image i uses seed + i

# What a request does with its source image (the canvas). Outpainting is inpainting on a padded
# canvas (inpainting.outpaint_canvas builds it), so it needs no mode of its own here.
MODES: dict[str, str] = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint"}
# A1111's "masked content": what the masked area starts from.
MASKED_CONTENT: dict[str, str] = {
    "original": "Original",  # the source pixels, noised by the denoising strength
    "fill": "Fill",  # the surrounding colours, blurred in, then noised
    "latent_noise": "Latent noise",  # pure noise (as if the strength were 1 inside the mask)
}
MAX_MASK_BLUR = 64
MAX_ONLY_MASKED_PADDING = 256
# A source for "only masked" inpainting may be larger than the model's maximum: only the crop
# around the mask is generated. Beyond this many pixels a source is refused.
MAX_SOURCE_PIXELS = 4096 * 4096
# LoRAs applied to one request (several at once, each with its own weight; A1111 allows any
# weight, we keep it to a range where results are still pictures).
MAX_LORAS = 5
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -2.0, 2.0


class EngineError(Exception):
    """Base class of the errors the engine raises on purpose."""


class InvalidRequest(EngineError, ValueError):
    """The request cannot be run on this model. ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelError(EngineError):
    """The model folder is missing, incomplete or of an unsupported kind."""


@dataclass(frozen=True)
class LoraRef:
    """One LoRA to apply to a request: a local `.safetensors` file (kohya/A1111 or diffusers keys),
    its sha256 (the cache key and what the PNG records), and its weight. ``name`` is what the
    prompt syntax `<lora:name:weight>` and the infotext's "Lora hashes" call it."""

    name: str
    sha256: str
    path: str
    weight: float = 1.0

    @property
    def short_hash(self) -> str:
        """A1111's short hash of a LoRA: the first 12 hex digits of the file's sha256."""
        return self.sha256[:12]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance_scale: float = 7.0
    sampler: str = "euler_a"  # key from SAMPLERS
    seed: int = 0
    num_images: int = 1  # 1-4; image i uses seed + i (A1111 convention)
    # The canvas (all defaulted: a plain request is text to image).
    mode: str = "txt2img"  # key of MODES
    init_image: bytes | None = None  # PNG/JPEG/WebP bytes of the source (img2img, inpaint)
    mask: bytes | None = None  # inpaint: an image of the source's size; white (>= 128) is repainted
    strength: float = 0.75  # denoising strength, 0-1 (img2img, inpaint)
    mask_blur: int = 4  # pixels of Gaussian blur at the mask's edge
    masked_content: str = "original"  # key of MASKED_CONTENT
    only_masked: bool = False  # generate a crop around the mask at width x height, paste it back
    only_masked_padding: int = 32  # pixels of context around the mask's bounding box
    loras: tuple[LoraRef, ...] = ()  # applied for this request only (never leak into the next)


@dataclass(frozen=True)
class StepUpdate:
    step: int  # 1-based, steps done
    total_steps: int
    preview_png: bytes | None  # small preview (PNG or WebP bytes), None when throttled/disabled
    preview_mime: str  # "image/webp" or "image/png"; "" when preview_png is None


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes  # full PNG with an A1111-compatible "parameters" text chunk
    seed: int
    width: int
    height: int
    infotext: str  # the same text as in the chunk


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    interrupted: bool
    engine_seconds: float


@dataclass(frozen=True)
class ModelInfo:
    name: str
    hash: str  # short A1111-style hash: first 10 hex digits of a sha256 over the weights
    family: str  # "sd1", "sd2", "sdxl", or a custom name from studio_model.json
    native_width: int
    native_height: int
    max_width: int
    max_height: int
    vae_scale_factor: int
    # Additions beyond the brief (all defaulted):
    latent_channels: int = 4
    # Linear latent->RGB preview: rgb = latent @ factors + bias, latents as the UNet sees them.
    latent_rgb_factors: tuple[tuple[float, ...], ...] | None = None
    latent_rgb_bias: tuple[float, ...] | None = None
    # A trained PreviewDecoder shipped with the model (absolute path of its safetensors), or "".
    preview_decoder: str = ""
    path: str = ""
    # What the Create form starts with for this model (a tiny model wants little guidance).
    default_steps: int = 20
    default_guidance_scale: float = 7.0
    default_sampler: str = "euler_a"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_text(name: str, text) -> None:
    if not isinstance(text, str):
        raise InvalidRequest(name, "must be text")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequest(name, f"is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
    bad = [c for c in text if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127]
    if bad:
        raise InvalidRequest(name, "contains control characters")


def _check_side(name: str, value, maximum: int, multiple: int) -> None:
    if not _is_int(value):
        raise InvalidRequest(name, "must be a whole number of pixels")
    if value % multiple:
        raise InvalidRequest(name, f"{value} is not a multiple of {multiple}")
    if value < MIN_SIDE:
        raise InvalidRequest(name, f"{value} is below the minimum of {MIN_SIDE}")
    if value > maximum:
        raise InvalidRequest(name, f"{value} is above this model's maximum of {maximum}")


def check_steps(steps) -> None:
    if not _is_int(steps) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise InvalidRequest("steps", f"must be a whole number from {MIN_STEPS} to {MAX_STEPS}")


def check_guidance_scale(g) -> None:
    if not _is_number(g) or g != g or not MIN_GUIDANCE <= g <= MAX_GUIDANCE:
        raise InvalidRequest("guidance_scale", f"must be a number from {MIN_GUIDANCE:g} to {MAX_GUIDANCE:g}")


def check_sampler(sampler) -> None:
    if sampler not in SAMPLERS:
        raise InvalidRequest("sampler", f"unknown sampler {sampler!r}; one of {', '.join(SAMPLERS)}")


def validate_request(request: GenerationRequest, info: ModelInfo) -> None:
    """Raise InvalidRequest for the first problem found; return None when the request can run."""
    _check_text("prompt", request.prompt)
    _check_text("negative_prompt", request.negative_prompt)
    multiple = max(8, info.vae_scale_factor)
    _check_side("width", request.width, info.max_width, multiple)
    _check_side("height", request.height, info.max_height, multiple)
    check_steps(request.steps)
    check_guidance_scale(request.guidance_scale)
    check_sampler(request.sampler)
    if not _is_int(request.seed) or not 0 <= request.seed <= MAX_SEED:
        raise InvalidRequest("seed", f"must be a whole number from 0 to {MAX_SEED}")
    if not _is_int(request.num_images) or not MIN_IMAGES <= request.num_images <= MAX_IMAGES:
        raise InvalidRequest("num_images", f"must be a whole number from {MIN_IMAGES} to {MAX_IMAGES}")
    _check_canvas(request)
    check_loras(request.loras)


def check_loras(loras) -> None:
    """Count, names and weights; that a file loads and fits the model is the engine's to check."""
    if not isinstance(loras, tuple) or not all(isinstance(lora, LoraRef) for lora in loras):
        raise InvalidRequest("loras", "must be a tuple of LoraRef")
    if len(loras) > MAX_LORAS:
        raise InvalidRequest("loras", f"at most {MAX_LORAS} LoRAs at once, not {len(loras)}")
    names = [lora.name for lora in loras]
    if len(set(names)) != len(names):
        raise InvalidRequest("loras", "the same LoRA is asked for twice")
    for lora in loras:
        weight = lora.weight
        if not _is_number(weight) or weight != weight or not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            raise InvalidRequest("loras", f"the weight of {lora.name} must be a number from "
                                          f"{MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}")


def _check_canvas(request: GenerationRequest) -> None:
    """The canvas fields' types and ranges. That the images decode and fit is checked where they
    are decoded (inpainting.load_source / load_mask), since this module stays Pillow-free."""
    if request.mode not in MODES:
        raise InvalidRequest("mode", f"unknown mode {request.mode!r}; one of {', '.join(MODES)}")
    if request.mode == "txt2img":
        if request.init_image is not None or request.mask is not None:
            raise InvalidRequest("mode", "text to image takes no source image or mask")
        return
    if not isinstance(request.init_image, bytes) or not request.init_image:
        raise InvalidRequest("init_image", f"{MODES[request.mode].lower()} needs a source image")
    if request.mode == "inpaint" and (not isinstance(request.mask, bytes) or not request.mask):
        raise InvalidRequest("mask", "inpainting needs a mask")
    if request.mode == "img2img" and request.mask is not None:
        raise InvalidRequest("mask", "image to image takes no mask (use inpaint)")
    if not _is_number(request.strength) or request.strength != request.strength or not 0 <= request.strength <= 1:
        raise InvalidRequest("strength", "must be a number from 0 to 1")
    if not _is_int(request.mask_blur) or not 0 <= request.mask_blur <= MAX_MASK_BLUR:
        raise InvalidRequest("mask_blur", f"must be a whole number of pixels from 0 to {MAX_MASK_BLUR}")
    if request.masked_content not in MASKED_CONTENT:
        raise InvalidRequest("masked_content", f"one of {', '.join(MASKED_CONTENT)}")
    if not isinstance(request.only_masked, bool):
        raise InvalidRequest("only_masked", "must be true or false")
    if request.only_masked and request.mode != "inpaint":
        raise InvalidRequest("only_masked", "applies to inpainting only")
    padding = request.only_masked_padding
    if not _is_int(padding) or not 0 <= padding <= MAX_ONLY_MASKED_PADDING:
        raise InvalidRequest("only_masked_padding", f"must be a whole number from 0 to {MAX_ONLY_MASKED_PADDING}")
