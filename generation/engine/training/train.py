"""Train studio-tiny from scratch: autoencoder, then text encoder + UNet.

    python -m generation.engine.training.train --out DIR [--device cuda]

Writes a standard diffusers Stable Diffusion folder (model_index.json, vae/,
text_encoder/, tokenizer/, unet/, scheduler/) plus ``studio_model.json`` (name,
family, native and max size, fitted latent->RGB preview factors) and
``train_log.json`` (the command, the settings, losses and timings).

Deterministic for a given device and thread count: every random draw comes
from generators seeded by ``--seed``. CPU and CUDA runs differ numerically.
The UNet phase uses a constant learning rate (after warm-up) and an EMA of the
weights, so a run stopped by ``--unet-time-limit`` after K steps equals a run
with ``--unet-steps K``; the log records K. No Django here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..preview_fit import decode_small, fit_latent_rgb, fit_preview_decoder, write_preview_decoder
from . import dataset
from .diffusion import autocast, noisy_and_target, per_sample_loss, snr, tokenize, use_plain_attention_on_cpu
from .models import (
    LATENT_SIZE,
    assemble_pipeline,
    build_text_encoder,
    build_unet,
    build_vae,
    scheduler_kwargs,
)
from .tokenizer import write_tokenizer

FAMILY = "studio-tiny"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output model folder (diffusers layout)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=40_000, help="rendered training scenes")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="render processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--vae-steps", type=int, default=5000)
    p.add_argument("--vae-batch", type=int, default=24)
    p.add_argument("--vae-crop", type=int, default=64, help="random square crops for the VAE")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    # 7743: the shipped weights' step count (their CPU run stopped there on a one-hour limit).
    p.add_argument("--unet-steps", type=int, default=7743)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--unet-time-limit", type=float, default=0, help="stop the UNet phase after N s (0: off)")
    p.add_argument("--default-guidance", type=float, default=3.0,
                   help="the guidance scale the Create form suggests for this model (studio_model.json)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="every N UNet steps save the EMA model to OUT/checkpoint (0: off)")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--min-snr-gamma", type=float, default=0.0,
                   help="min-SNR-gamma loss weighting (0: off, plain v-prediction loss). For "
                        "v-prediction it weights the noisiest timesteps, where the layout is "
                        "decided, by about SNR: the first model trained with 5 never learned "
                        "shapes or positions")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="train under bfloat16 autocast (float32 weights)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.use_deterministic_algorithms (warn-only); on by default")
    p.add_argument("--vae-from", default="",
                   help="reuse the VAE of a trained model folder (no VAE phase); train the text "
                        "encoder and UNet from scratch")
    p.add_argument("--init-from", default="",
                   help="continue from a trained model folder: reuse its VAE (no VAE phase) and "
                        "start the text encoder and UNet from its weights")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="store weights as float16 safetensors")
    p.add_argument("--preview-decoder", action=argparse.BooleanOptionalAction, default=True,
                   help="train the live-preview decoder on the saved model (preview_fit --decoder)")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- VAE


def train_vae(vae, images_u8: torch.Tensor, args, device, gen: torch.Generator, log: dict):
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    n, crop, full = images_u8.shape[0], args.vae_crop, images_u8.shape[-1]
    warm = max(1, args.vae_steps // 20)
    losses = []
    for step in range(args.vae_steps):
        lr = args.vae_lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (args.vae_batch,), generator=gen, device=device)
        ox, oy = (int(v) for v in torch.randint(0, full - crop + 1, (2,), generator=gen, device=device))
        x = images_u8[idx, :, oy:oy + crop, ox:ox + crop].float() / 127.5 - 1
        with autocast(device, args.bf16):
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen, device=device)
            rec = vae.decode(z).sample.float()
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = post.kl().float().mean()
        loss = rec_loss + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(rec_loss.item())
        if step % 200 == 0 or step == args.vae_steps - 1:
            _log(f"vae step {step} rec {np.mean(losses[-200:]):.4f} kl {kl.item():.1f} lr {lr:.2e}")
    log["vae_loss_curve"] = [float(np.mean(losses[i:i + 200])) for i in range(0, len(losses), 200)]
    vae.eval()


@torch.no_grad()
def encode_all(vae, images_u8: torch.Tensor, device, bf16: bool, batch: int = 256):
    means, stds = [], []
    for a in range(0, images_u8.shape[0], batch):
        x = images_u8[a:a + batch].to(device).float() / 127.5 - 1
        with autocast(device, bf16):
            d = vae.encode(x).latent_dist
        means.append(d.mean.float())
        stds.append(d.std.float())
    return torch.cat(means), torch.cat(stds)


# ----------------------------------------------------------------------------- UNet


@contextlib.contextmanager
def _ema_swapped_in(params, ema):
    """Temporarily load the EMA weights into the live parameters (to save a checkpoint)."""
    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, ema)
        try:
            yield
        finally:
            torch._foreach_copy_(params, live)


def train_unet(unet, text_encoder, lat_mean, lat_std, scaling, ids, empty_ids, args, device, gen, log,
               checkpoint=None):
    """Text encoder + UNet from scratch; ``checkpoint(steps_done)`` is called with the EMA
    weights loaded every ``--checkpoint-every`` steps (to watch a long run's quality)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**scheduler_kwargs())
    snr_table = snr(sched, device)
    unet.to(device).train()
    use_plain_attention_on_cpu(unet, device)
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    n = ids.shape[0]
    warm = 500
    losses, t0, done = [], time.time(), 0
    for step in range(args.unet_steps):
        if args.unet_time_limit and time.time() - t0 > args.unet_time_limit:
            _log(f"unet time limit reached after {step} steps")
            break
        for g in opt.param_groups:
            g["lr"] = args.unet_lr * min(1.0, (step + 1) / warm)
        b = args.unet_batch
        idx = torch.randint(0, n, (b,), generator=gen, device=device)
        tok = ids[idx]
        drop = torch.rand(b, generator=gen, device=device) < args.caption_dropout
        tok = torch.where(drop[:, None], empty_ids[None, :], tok)
        x0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen, device=device))
        x0 = x0 * scaling
        noise = torch.randn(x0.shape, generator=gen, device=device)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen, device=device)
        noisy, target = noisy_and_target(sched, x0, noise, t)  # v-prediction: the velocity
        with autocast(device, args.bf16):
            cond = text_encoder(tok)[0]
            pred = unet(noisy, t, cond).sample.float()
        # min-SNR-gamma weighting for v-prediction (when on): min(snr, g) / (snr + 1)
        loss = per_sample_loss(pred, target, t=t, snr_table=snr_table, min_snr_gamma=args.min_snr_gamma,
                               prediction_type=sched.config.prediction_type).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        losses.append(loss.item())
        done = step + 1
        if step % 250 == 0 or step == args.unet_steps - 1:
            rate = (time.time() - t0) / done
            _log(f"unet step {step} loss {np.mean(losses[-250:]):.4f} ({rate * 1000:.0f} ms/step)")
        if checkpoint and args.checkpoint_every and done % args.checkpoint_every == 0:
            with _ema_swapped_in(params, ema):
                checkpoint(done)
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    log["unet_steps_done"] = done
    log["unet_loss_curve"] = [float(np.mean(losses[i:i + 250])) for i in range(0, len(losses), 250)]


# ----------------------------------------------------------------------------- save


def save_model(out: Path, vae, text_encoder, unet, tok_dir: Path, studio: dict, fp16: bool):
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = assemble_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                             scheduler=EulerDiscreteScheduler(**scheduler_kwargs()))
    pipe.to("cpu")
    if fp16:
        # UNet and VAE as float16 (diffusers loads them back as float32 unless told
        # otherwise). The text encoder stays float32: it is small, and transformers 5
        # would load float16 weights as float16, breaking a float32 pipeline.
        unet.half()
        vae.half()
    pipe.save_pretrained(out, safe_serialization=True)
    unet.float()
    vae.float()
    # Our hand-written tokenizer files, not whatever transformers re-serialises.
    shutil.rmtree(out / "tokenizer", ignore_errors=True)
    shutil.copytree(tok_dir, out / "tokenizer")
    (out / "studio_model.json").write_text(json.dumps(studio, indent=1) + "\n")


def studio_json(args, log: dict, factors, bias, unet_steps: int) -> dict:
    """studio_model.json: what the engine needs beyond the diffusers configs."""
    earlier = log.get("init_from_log", {})  # a continued run counts its source's UNet steps
    vae_source = earlier or log.get("vae_from", {})
    return {
        "name": "studio-tiny",
        "family": FAMILY,
        "native_width": dataset.SIZE,
        "native_height": dataset.SIZE,
        "max_width": 2 * dataset.SIZE,
        "max_height": 2 * dataset.SIZE,
        "latent_rgb_factors": factors,
        "latent_rgb_bias": bias,
        "latent_rgb_note": "rgb = (latents * vae.config.scaling_factor) @ factors + bias, per latent "
                           "pixel, i.e. on latents as the pipeline sees them; result in [-1, 1]",
        "default_steps": 20,
        "default_guidance_scale": args.default_guidance,
        "default_sampler": "euler",
        "prediction_type": "v_prediction",
        "trained_steps": {
            "vae": vae_source.get("args", {}).get("vae_steps", args.vae_steps),
            "unet": unet_steps + earlier.get("unet_steps_done", 0),
        },
    }


def main(argv=None) -> Path:
    args = parse_args(argv)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
    gen = torch.Generator(device=device).manual_seed(args.seed)
    log: dict = {
        "command": "python -m generation.engine.training.train " + shlex.join(sys.argv[1:] if argv is None else argv),
        "args": vars(args), "torch": torch.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "timings_s": {},
    }
    timings = log["timings_s"]

    tok_dir = out / "_tokenizer_build"
    vocab_size = write_tokenizer(tok_dir, dataset.vocabulary())
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    t = time.time()
    imgs, captions = dataset.render_dataset(args.images, args.seed, workers=args.workers)
    images_u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(device)
    timings["render"] = time.time() - t
    _log(f"rendered {len(captions)} scenes in {timings['render']:.1f}s")

    t = time.time()
    if args.init_from or args.vae_from:
        from diffusers import AutoencoderKL

        src = Path(args.init_from or args.vae_from)
        vae = AutoencoderKL.from_pretrained(src / "vae", torch_dtype=torch.float32).to(device)
        vae.eval()
        log["vae_from" if args.vae_from else "init_from_log"] = json.loads((src / "train_log.json").read_text())
    else:
        vae = build_vae()
        train_vae(vae, images_u8, args, device, gen, log)
    timings["vae_train"] = time.time() - t
    t = time.time()
    lat_mean, lat_std = encode_all(vae, images_u8, device, args.bf16)
    if not (args.init_from or args.vae_from):  # a VAE trained here: scale it, save it early
        sample = lat_mean[:4096] + lat_std[:4096] * torch.randn(lat_mean[:4096].shape, generator=gen, device=device)
        vae.register_to_config(scaling_factor=round(float(1.0 / sample.std()), 5))
        vae.save_pretrained(out / "vae")  # so a long UNet phase can be judged against it
    scaling = vae.config.scaling_factor
    # Linear preview factors fitted on the VAE's own decode of training-image latents (the fallback
    # previewer; the trained preview decoder, fitted after saving, is what the engine uses).
    unet_latents = lat_mean[:2048] * scaling
    linear = fit_latent_rgb(unet_latents, decode_small(vae, unet_latents))
    factors, bias = linear.factors, linear.bias
    timings["vae_encode"] = time.time() - t
    log.update(scaling_factor=scaling, latent_rgb_rms_error=linear.rms_error)
    _log(f"encoded; scaling_factor {scaling:.4f}; latent->rgb rms {linear.rms_error:.3f}")
    del images_u8

    t = time.time()
    text_encoder = build_text_encoder(vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet = build_unet()
    if args.init_from:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        src = Path(args.init_from)
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(src / "unet", torch_dtype=torch.float32).state_dict())
        text_encoder.load_state_dict(CLIPTextModel.from_pretrained(src / "text_encoder", dtype=torch.float32).state_dict())
    ids, empty_ids = tokenize(tokenizer, captions, device), tokenize(tokenizer, [""], device)[0]

    def checkpoint(steps_done: int) -> None:
        folder = out / "checkpoint"
        save_model(folder, vae, text_encoder, unet, tok_dir, studio_json(args, log, factors, bias, steps_done),
                   fp16=False)
        (folder / "train_log.json").write_text(json.dumps({**log, "unet_steps_done": steps_done}, indent=1) + "\n")
        vae.to(device), text_encoder.to(device), unet.to(device)  # save_model moved them to the CPU
        _log(f"checkpoint after {steps_done} UNet steps: {folder}")

    train_unet(unet, text_encoder, lat_mean, lat_std, scaling, ids, empty_ids, args, device, gen, log,
               checkpoint=checkpoint)
    timings["unet_train"] = time.time() - t

    studio = studio_json(args, log, factors, bias, log["unet_steps_done"])
    vae.to("cpu"), text_encoder.to("cpu"), unet.to("cpu")
    try:
        save_model(out, vae, text_encoder, unet, tok_dir, studio, args.fp16)
    except Exception:  # keep the trained weights whatever went wrong while saving
        torch.save({"vae": vae.state_dict(), "text_encoder": text_encoder.state_dict(),
                    "unet": unet.state_dict(), "studio": studio, "log": log}, out / "raw_weights.pt")
        raise
    shutil.rmtree(tok_dir, ignore_errors=True)
    if args.preview_decoder:  # fitted on the saved model, exactly as the engine will load it
        from diffusers import StableDiffusionPipeline

        t = time.time()
        pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None,
                                                       requires_safety_checker=False)
        decoder, fit = fit_preview_decoder(pipe.to(device), seed=args.seed, log=_log)
        write_preview_decoder(out, decoder, fit)
        timings["preview_decoder"] = time.time() - t
    timings["total"] = time.time() - t_start
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    _log(f"saved {out} in {timings['total']:.0f}s total")
    assert LATENT_SIZE == dataset.SIZE // 8
    return out


if __name__ == "__main__":
    main()
