"""Per-step preview frames: cheap latent -> small RGB image -> WebP/PNG bytes.

Three methods, never a full VAE decode:
- LinearPreviewer: ``rgb = latent @ factors + bias`` per latent pixel (1/8 resolution), ~free;
  the published factors suit the SD VAEs;
- DecoderPreviewer: a few-KB conv net (PreviewDecoder) trained on our own model's VAE decodes and
  shipped beside it (``preview_decoder`` in studio_model.json), at 1/2 resolution; for a VAE whose
  colours are not a linear function of the latents (studio-tiny's: see docs/engine.md);
- TaesdPreviewer: the tiny AutoencoderTiny decoder (TAESD) when its weights are available locally.

Which latents: the denoised estimate x0 of the step when the scheduler exposes it (see
DenoisedTracker), otherwise the current latents. Early x0 estimates already show the composition,
whereas the noisy latents of the first steps are mostly noise.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import torch
from PIL import Image, features

PREVIEW_MAX_SIDE = 256  # TAESD frames are downscaled to this; linear frames are 1/8 size already

if features.check("webp"):
    PREVIEW_FORMAT, PREVIEW_MIME = "WEBP", "image/webp"
else:  # pragma: no cover - Pillow built without libwebp
    PREVIEW_FORMAT, PREVIEW_MIME = "PNG", "image/png"


class LinearPreviewer:
    """Latents N,C,h,w (UNet space) -> uint8 N,h,w,3 through a fixed C x 3 matrix and bias."""

    def __init__(self, factors, bias, device):
        self.factors = torch.tensor(factors, dtype=torch.float32, device=device)
        self.bias = torch.tensor(bias, dtype=torch.float32, device=device)

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        rgb = torch.einsum("nchw,cr->nhwr", latents.float(), self.factors) + self.bias
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


class PreviewDecoder(torch.nn.Module):
    """Latents N,C,h,w (UNet space) -> RGB N,3,h*upscale,w*upscale in about [-1, 1].

    ``layers`` 3x3 convolutions of width ``hidden`` (SiLU) see each latent pixel with its
    neighbours, then a 3x3 convolution paints each latent pixel's upscale x upscale block
    (PixelShuffle). With 3 layers a block sees 9x9 latent pixels: the receptive field, not the
    width, is what brought the error down (docs/engine.md).
    """

    FORMAT = "studio-preview-decoder"

    def __init__(self, latent_channels: int = 4, hidden: int = 32, layers: int = 3, upscale: int = 4):
        super().__init__()
        self.config = {"latent_channels": latent_channels, "hidden": hidden, "layers": layers,
                       "upscale": upscale}
        nn = torch.nn
        body: list = []
        for i in range(layers):
            body += [nn.Conv2d(latent_channels if i == 0 else hidden, hidden, 3, padding=1), nn.SiLU()]
        self.layers = nn.Sequential(*body, nn.Conv2d(hidden, 3 * upscale * upscale, 3, padding=1),
                                    nn.PixelShuffle(upscale))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)

    def save(self, path) -> None:
        from safetensors.torch import save_file

        metadata = {"format": self.FORMAT, **{k: str(v) for k, v in self.config.items()}}
        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path) -> "PreviewDecoder":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        if metadata.get("format") != cls.FORMAT:
            raise ValueError(f"{path} is not a {cls.FORMAT} file")
        decoder = cls(**{k: int(metadata[k]) for k in ("latent_channels", "hidden", "layers", "upscale")})
        decoder.load_state_dict(tensors)
        return decoder.eval()


class DecoderPreviewer:
    """Latents -> uint8 N,H,W,3 through a PreviewDecoder loaded from a safetensors file."""

    def __init__(self, path, device):
        self.decoder = PreviewDecoder.load(path).to(device)

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            image = self.decoder(latents.float())
        return _to_uint8(image)


class TaesdPreviewer:
    """Latents -> uint8 N,H,W,3 through TAESD (diffusers AutoencoderTiny), loaded from a local folder."""

    def __init__(self, taesd_path, device, dtype):
        from diffusers import AutoencoderTiny

        from .loading import dtype_kwarg, quiet_progress

        with quiet_progress():
            self.vae = AutoencoderTiny.from_pretrained(taesd_path, local_files_only=True,
                                                       **dtype_kwarg(dtype))
        self.vae.to(device).eval()

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = latents.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor
            image = self.vae.decode(x).sample.float()  # [-1, 1]
        return _to_uint8(image)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """N,3,H,W in [-1, 1] -> uint8 N,H,W,3, area-averaged down to at most PREVIEW_MAX_SIDE."""
    side = max(image.shape[-2:])
    if side > PREVIEW_MAX_SIDE:
        image = torch.nn.functional.avg_pool2d(image, math.ceil(side / PREVIEW_MAX_SIDE))
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid(frames: np.ndarray) -> np.ndarray:
    """N,h,w,3 -> one image: the frames side by side, two rows for 3-4 images (as A1111 grids)."""
    n, h, w, _ = frames.shape
    if n == 1:
        return frames[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = frames[i]
    return out


def frame_distance(frame: bytes, image: bytes) -> float:
    """Mean colour distance of a preview frame to an image (encoded bytes), per channel on 0-255:
    the frame scaled smoothly (bilinear) to the image's size, as the browser shows it. For tests
    and benchmarks: how close previews come to the final image."""
    with Image.open(io.BytesIO(image)) as picture:
        target = np.asarray(picture.convert("RGB"), dtype=np.float32)
    with Image.open(io.BytesIO(frame)) as picture:
        scaled = picture.convert("RGB").resize((target.shape[1], target.shape[0]), Image.BILINEAR)
    return float(np.abs(np.asarray(scaled, dtype=np.float32) - target).mean())


def encode_frame(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(rgb, "RGB")
    if PREVIEW_FORMAT == "WEBP":
        image.save(buf, format="WEBP", quality=80, method=0)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class DenoisedTracker:
    """Remembers the scheduler's denoised estimate (x0) of the last step, for previews.

    Euler, Euler a and DDIM return it from step() (``pred_original_sample``); the multistep solvers
    (DPM++ in "dpmsolver++" mode, UniPC with predict_x0) keep it as ``model_outputs[-1]``. For a
    scheduler that offers neither, latest() is None and the caller previews the latents themselves.

    It wraps the step() of the one scheduler instance it is given (made fresh for each generation);
    functools.wraps keeps the signature, which diffusers inspects to pass ``generator`` and ``eta``.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self._x0: torch.Tensor | None = None
        original = scheduler.step

        @functools.wraps(original)
        def step(*args, **kwargs):
            out = original(*args, **kwargs)
            if isinstance(out, tuple):
                self._x0 = out[1] if len(out) > 1 else None
            else:
                self._x0 = getattr(out, "pred_original_sample", None)
            return out

        scheduler.step = step

    def _multistep_x0(self) -> torch.Tensor | None:
        s = self.scheduler
        outputs = getattr(s, "model_outputs", None)
        if not outputs or outputs[-1] is None:
            return None
        algorithm = getattr(s.config, "algorithm_type", None)
        if algorithm in ("dpmsolver++", "sde-dpmsolver++") or getattr(s, "predict_x0", False) is True:
            return outputs[-1]
        return None

    def latest(self) -> torch.Tensor | None:
        return self._x0 if self._x0 is not None else self._multistep_x0()
