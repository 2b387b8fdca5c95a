"""Fit the live previews of a model of our own: linear factors, or a tiny trained decoder.

    python -m generation.engine.preview_fit MODEL_DIR [--samples 24] [--write]
    python -m generation.engine.preview_fit MODEL_DIR --decoder [--runs 48] [--train-steps 3000] [--write]

Both learn from (latent, VAE decode) pairs, latents taken as the UNet sees them (VAE latents times
the VAE scaling factor, the convention of the published SD factors):

- linear (the default): least squares for ``rgb = latent @ factors + bias`` per latent pixel
  against the decode area-averaged to the latent size, on the model's final latents for a few
  prompts and seeds; --write stores the factors in MODEL_DIR/studio_model.json. The demo model
  builder and the studio-tiny trainer call fit_latent_rgb() on latents of their own.
- --decoder: a PreviewDecoder (generation/engine/previews.py, ~34k weights) trained with Adam on
  the denoised estimates x0 of every step of the model's own runs (the latents previews are
  made from: blurry early on, sharp at the end), with several samplers, guidance scales and
  prompts; --write saves MODEL_DIR/preview_decoder.safetensors and names it in studio_model.json.
  Seeded; the command pins torch to one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
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
DECODER_FILE = "preview_decoder.safetensors"
DECODER_SAMPLERS = ("euler", "euler_a", "dpmpp_2m", "ddim", "unipc", "dpmpp_2m_karras")


@dataclass(frozen=True)
class PreviewFit:
    factors: list[list[float]]  # C x 3
    bias: list[float]  # 3
    correlation: float  # Pearson r between predicted and decoded pixels, all channels
    samples: int
    rms_error: float = 0.0  # in [-1, 1] units


def decode_small(vae, latents: torch.Tensor, factor: int | None = None, batch: int = 32) -> torch.Tensor:
    """VAE-decode UNet-space latents and area-average the images by ``factor`` (default: down to
    the latent size), in [-1, 1]: N,3,H/factor,W/factor on the CPU. Decoded in batches."""
    factor = factor or 2 ** (len(vae.config.block_out_channels) - 1)
    out = []
    with torch.inference_mode():
        for start in range(0, latents.shape[0], batch):
            chunk = latents[start : start + batch].to(vae.device, vae.dtype) / vae.config.scaling_factor
            image = vae.decode(chunk).sample.float().clamp(-1, 1)
            out.append(F.avg_pool2d(image, factor).cpu() if factor > 1 else image.cpu())
    return torch.cat(out)


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
    x = latents.double().permute(0, 2, 3, 1).reshape(-1, channels).cpu()
    y = images_small.double().permute(0, 2, 3, 1).reshape(-1, 3).cpu()
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(xa, y).solution  # (C+1) x 3
    factors, bias = solution[:channels], solution[channels]
    predicted = (x @ factors + bias).clamp(-1, 1)
    return PreviewFit(
        factors=[[round(float(v), 6) for v in row] for row in factors],
        bias=[round(float(v), 6) for v in bias],
        correlation=round(correlation(predicted, y), 4),
        samples=int(latents.shape[0]),
        rms_error=round(float((xa @ solution - y).pow(2).mean().sqrt()), 5),
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


# -- the trained preview decoder ------------------------------------------------------------------


def fit_prompt(seed: int, index: int) -> str:
    """Run ``index``'s prompt: captions of the studio-tiny training set, an empty prompt in 8."""
    from .training.dataset import scene_for_index

    return "" if index % 8 == 0 else scene_for_index(seed, index).caption


def denoised_trajectories(pipe, *, runs: int, seed: int = 0, size: int | None = None) -> torch.Tensor:
    """What previews are made from: the denoised estimate x0 after every step of ``runs`` runs of
    the pipeline (samplers, step counts and guidance scales varied), plus each run's final latents.
    N,C,h,w in UNet space, on the CPU."""
    from .previews import DenoisedTracker
    from .samplers import make_scheduler

    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = size or pipe.unet.config.sample_size * vae_scale
    base_config, original = pipe.scheduler.config, pipe.scheduler
    rng = random.Random(seed)
    pipe.set_progress_bar_config(disable=True)
    latents: list[torch.Tensor] = []
    try:
        for i in range(runs):
            pipe.scheduler = make_scheduler(DECODER_SAMPLERS[i % len(DECODER_SAMPLERS)], base_config)
            tracker = DenoisedTracker(pipe.scheduler)

            def keep(pipeline, step, timestep, kwargs, tracker=tracker):
                x0 = tracker.latest()
                latents.append((kwargs["latents"] if x0 is None else x0).float().cpu())
                return {}

            steps, guidance = rng.choice((8, 12, 20)), rng.choice((1.0, 3.0, 5.0, 7.0))
            result = pipe(fit_prompt(seed, i), width=size, height=size, num_inference_steps=steps,
                          guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed * 10_000 + i),
                          output_type="latent", callback_on_step_end=keep,
                          callback_on_step_end_tensor_inputs=["latents"])
            latents.append(result.images.float().cpu())
    finally:
        pipe.scheduler = original
    return torch.cat(latents)


def train_preview_decoder(latents: torch.Tensor, images: torch.Tensor, *, steps: int = 3000, batch: int = 64,
                          lr: float = 3e-3, hidden: int = 32, seed: int = 0, log=None):
    """Adam on the L1 distance between PreviewDecoder(latents) and the VAE's images (N,3,H,W in
    [-1, 1], H = h * upscale), cosine learning rate. Returns the decoder (eval mode)."""
    from .previews import PreviewDecoder

    upscale = images.shape[-1] // latents.shape[-1]
    torch.manual_seed(seed)
    decoder = PreviewDecoder(latents.shape[1], hidden=hidden, upscale=upscale)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    latents, images = latents.float(), images.float()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, latents.shape[0], (batch,), generator=generator)
        loss = (decoder(latents[idx]) - images[idx]).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log and (step % 500 == 0 or step == steps - 1):
            log(f"decoder step {step} L1 {loss.item() * 127.5:.1f} (0-255)")
    return decoder.eval()


def preview_decoder_error(decoder, latents: torch.Tensor, images: torch.Tensor) -> float:
    """Mean absolute difference to the VAE's images, 0-255 scale."""
    with torch.inference_mode():
        return float((decoder(latents.float()).clamp(-1, 1) - images).abs().mean() * 127.5)


def fit_preview_decoder(pipe, *, runs: int = 48, steps: int = 3000, upscale: int = 4, seed: int = 0,
                        log=print):
    """Trajectories -> VAE decodes -> a trained PreviewDecoder, and its error on held-out runs."""
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    started = time.monotonic()
    train_latents = denoised_trajectories(pipe, runs=runs, seed=seed)
    held_out = denoised_trajectories(pipe, runs=max(2, runs // 8), seed=seed + 1)
    log(f"{len(train_latents)} + {len(held_out)} latents in {time.monotonic() - started:.0f} s")
    train_images = decode_small(pipe.vae, train_latents, vae_scale // upscale)
    held_out_images = decode_small(pipe.vae, held_out, vae_scale // upscale)
    log(f"decoded in {time.monotonic() - started:.0f} s")
    decoder = train_preview_decoder(train_latents, train_images, steps=steps, seed=seed, log=log)
    error = preview_decoder_error(decoder, held_out, held_out_images)
    log(f"trained in {time.monotonic() - started:.0f} s; held-out error {error:.1f} (0-255)")
    return decoder, {"runs": runs, "latents": len(train_latents), "train_steps": steps, "seed": seed,
                     "held_out_error_0_255": round(error, 2)}


def write_preview_decoder(model_dir: str | Path, decoder, fit: dict) -> Path:
    """Save the decoder beside the model and name it in studio_model.json."""
    from .model_info import STUDIO_MODEL_FILE, read_studio_json

    path = Path(model_dir) / DECODER_FILE
    decoder.save(path)
    studio = read_studio_json(model_dir)
    studio.update(preview_decoder=DECODER_FILE, preview_decoder_fit=fit)
    (Path(model_dir) / STUDIO_MODEL_FILE).write_text(json.dumps(studio, indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    from diffusers import StableDiffusionPipeline

    from .loading import quiet_progress
    from .model_info import STUDIO_MODEL_FILE, read_studio_json

    parser = argparse.ArgumentParser(prog="python -m generation.engine.preview_fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--samples", type=int, default=24, help="linear: images to fit on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoder", action="store_true", help="train a preview decoder instead")
    parser.add_argument("--runs", type=int, default=48, help="decoder: pipeline runs to learn from")
    parser.add_argument("--train-steps", type=int, default=3000, help="decoder: Adam steps")
    parser.add_argument("--write", action="store_true", help="store the result with the model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible, and immune to an oversubscribed CPU
    with quiet_progress():
        pipe = StableDiffusionPipeline.from_pretrained(
            args.model_dir, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
    if args.decoder:
        decoder, fit = fit_preview_decoder(pipe, runs=args.runs, steps=args.train_steps, seed=args.seed)
        print(json.dumps(fit, indent=2))
        if args.write:
            print(f"written to {write_preview_decoder(args.model_dir, decoder, fit)}")
        return 0
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
