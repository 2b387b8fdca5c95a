"""Fit linear latent->RGB preview factors for a model of our own.

For each latent pixel, ``rgb = latent @ factors + bias`` should approximate the VAE-decoded image
downsampled to the latent size (area average), in [-1, 1]. Latents are taken as the UNet sees them
(VAE latents times the VAE scaling factor), the same convention as the published SD factors.

    python -m generation.engine.preview_fit MODEL_DIR [--samples 24] [--write]

fits on the model's own outputs (the pipeline run on a few prompts and seeds) and, with --write,
stores the factors in MODEL_DIR/studio_model.json. Training code can call fit_latent_rgb() on
latents of its own (for example VAE encodings of training images).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

FIT_PROMPTS = (
    "a photo of a cat",
    "a castle on a hill, oil painting",
    "red sky over the sea at sunset",
    "a green forest at night",
    "portrait of a woman, studio lighting",
    "a blue car in a city street",
    "",
)


@dataclass(frozen=True)
class PreviewFit:
    factors: list[list[float]]  # C x 3
    bias: list[float]  # 3
    correlation: float  # Pearson r between predicted and decoded pixels, all channels
    samples: int


def decode_small(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode UNet-space latents and area-average the image down to the latent size: N,3,h,w."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.inference_mode():
        image = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    return F.avg_pool2d(image.float().clamp(-1, 1), scale).cpu()


def project(latents: torch.Tensor, factors, bias) -> torch.Tensor:
    """N,C,h,w latents -> N,3,h,w RGB in [-1, 1] (the preview, before mapping to bytes)."""
    m = torch.as_tensor(factors, dtype=torch.float32, device=latents.device)
    b = torch.as_tensor(bias, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("nchw,cr->nrhw", latents.float(), m) + b.view(1, 3, 1, 1)
    return rgb.clamp(-1, 1)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


def fit_latent_rgb(latents: torch.Tensor, images_small: torch.Tensor) -> PreviewFit:
    """Least squares: latents N,C,h,w (UNet space) against images N,3,h,w in [-1, 1]."""
    channels = latents.shape[1]
    x = latents.float().permute(0, 2, 3, 1).reshape(-1, channels).cpu()
    y = images_small.float().permute(0, 2, 3, 1).reshape(-1, 3).cpu()
    xa = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(xa, y).solution  # (C+1) x 3
    factors, bias = solution[:channels], solution[channels]
    predicted = (x @ factors + bias).clamp(-1, 1)
    return PreviewFit(
        factors=[[round(float(v), 6) for v in row] for row in factors],
        bias=[round(float(v), 6) for v in bias],
        correlation=round(correlation(predicted, y), 4),
        samples=int(latents.shape[0]),
    )


def sample_pipeline_latents(pipe, *, samples: int, seed: int = 0, size: int | None = None, steps: int = 8):
    """Final latents of the pipeline itself on a few prompts and seeds (N,C,h,w, UNet space)."""
    from diffusers import EulerAncestralDiscreteScheduler

    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = size or max(64, (pipe.unet.config.sample_size * vae_scale) // 2)
    scheduler = pipe.scheduler
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    try:
        out = []
        for i in range(samples):
            generator = torch.Generator("cpu").manual_seed(seed * 1000 + i)
            result = pipe(
                FIT_PROMPTS[i % len(FIT_PROMPTS)],
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=7.0,
                generator=generator,
                output_type="latent",
            )
            out.append(result.images.float().cpu())
    finally:
        pipe.scheduler = scheduler
    return torch.cat(out)


def fit_pipeline_previews(pipe, *, samples: int = 24, seed: int = 0) -> PreviewFit:
    latents = sample_pipeline_latents(pipe, samples=samples, seed=seed)
    return fit_latent_rgb(latents, decode_small(pipe.vae, latents))


def main(argv: list[str] | None = None) -> int:
    from diffusers import StableDiffusionPipeline

    from .loading import quiet_progress
    from .model_info import STUDIO_MODEL_FILE, read_studio_json

    parser = argparse.ArgumentParser(prog="python -m generation.engine.preview_fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="store the factors in studio_model.json")
    args = parser.parse_args(argv)
    with quiet_progress():
        pipe = StableDiffusionPipeline.from_pretrained(
            args.model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
    fit = fit_pipeline_previews(pipe, samples=args.samples, seed=args.seed)
    print(json.dumps({"latent_rgb_factors": fit.factors, "latent_rgb_bias": fit.bias,
                      "correlation": fit.correlation, "samples": fit.samples}, indent=2))
    if args.write:
        path = Path(args.model_dir) / STUDIO_MODEL_FILE
        studio = read_studio_json(args.model_dir)
        studio.update(latent_rgb_factors=fit.factors, latent_rgb_bias=fit.bias,
                      latent_rgb_fit={"correlation": fit.correlation, "samples": fit.samples,
                                      "space": "unet latents (VAE latents x scaling_factor)"})
        path.write_text(json.dumps(studio, indent=2) + "\n", encoding="utf-8")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
