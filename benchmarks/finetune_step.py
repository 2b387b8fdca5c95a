"""Step time of the fine-tuning trainer against a plain diffusers + PEFT loop, side by side.

    python benchmarks/finetune_step.py [--rounds 5] [--steps 30] [--resolution 128] [--rank 8]

Same model (the shipped studio-tiny), batch 1, resolution, rank, one torch thread, one process.
The plain loop is written here the way diffusers' examples/dreambooth/train_dreambooth_lora.py
trains: ``unet.add_adapter(LoraConfig(...))`` on to_q/to_k/to_v/to_out.0, the model's scheduler as
a DDPMScheduler, AdamW, clip_grad_norm_, ``loss.item()`` every step. Two variants of it:

* ``plain (same work)``: with the trainer's shortcuts (VAE latents and caption embeddings computed
  once, plain matmul attention on the CPU), so the ratio is the trainer's own overhead: hooks,
  bookkeeping, epoch order, the loss helper.
* ``plain (example as is)``: encodes the image with the VAE and the caption with the text encoder
  every step and keeps diffusers' default attention, as the example does without its
  --pre_compute_text_embeddings flag.

The rounds are interleaved (trainer, same work, as is; the first of them rotates each round) so a
drifting load on the shared CPU hurts every column alike; a step's time is the wall time between two steps (the
trainer's on_step callbacks; the loop's iterations), after 3 warm-up steps per round. The table
shows the median, the quartiles, the ratio of medians and the median of the per-round ratios
(each round's three loops ran back to back, so that one is the least sensitive to drift).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "generation" / "engine" / "weights" / "studio-tiny"
WARMUP = 3


def images(resolution: int):
    from PIL import Image

    from generation.engine.training.dataset import PALETTE
    from generation.engine.training.spec import TrainingImage

    out = []
    for colour in ("red", "blue", "green", "purple"):
        img = Image.new("RGB", (resolution, resolution), PALETTE["white"])
        r = resolution // 4
        img.paste(PALETTE[colour], (r, r, 3 * r, 3 * r))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        out.append(TrainingImage(buffer.getvalue(), f"a {colour} zwx"))
    return tuple(out)


def trainer_steps(args, imgs) -> list[float]:
    from generation.engine.training.finetune import Trainer
    from generation.engine.training.spec import TrainingSpec

    spec = TrainingSpec(base_model_path=str(MODEL), images=imgs, steps=max(10, args.steps + WARMUP),
                        rank=args.rank, learning_rate=5e-4, resolution=args.resolution, batch_size=1,
                        checkpoint_every=0, sample_every=0)
    stamps: list[float] = []
    Trainer(device="cpu").run(spec, on_step=lambda update: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps[WARMUP - 1:], stamps[WARMUP:])]


def plain_steps(args, imgs, *, same_work: bool) -> list[float]:
    """The loop a diffusers user writes (train_dreambooth_lora.py, stripped of accelerate)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if same_work:
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    pixels = torch.stack([
        torch.from_numpy(np.array(Image.open(io.BytesIO(i.png)).convert("RGB"))).permute(2, 0, 1).float()
        / 127.5 - 1 for i in imgs])
    ids = tokenizer([i.caption for i in imgs], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
        cached_mean, cached_std = dist.mean, dist.std
        cached_cond = text_encoder(ids)[0]
    unet.train()
    generator = torch.Generator().manual_seed(0)
    times, last = [], None
    for step in range(args.steps + WARMUP):
        i = step % len(imgs)
        if same_work:
            latents = cached_mean[i:i + 1] + cached_std[i:i + 1] * torch.randn(
                cached_mean[i:i + 1].shape, generator=generator)
            cond = cached_cond[i:i + 1]
        else:
            with torch.no_grad():
                latents = vae.encode(pixels[i:i + 1]).latent_dist.sample(generator)
                cond = text_encoder(ids[i:i + 1])[0]
        latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
        pred = unet(noisy, timesteps, cond).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        loss.detach().item()
        now = time.perf_counter()
        if last is not None and step >= WARMUP:
            times.append(now - last)
        last = now
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30, help="timed steps per round (after 3 warm-up steps)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    imgs = images(args.resolution)
    columns = {"trainer": [], "plain (same work)": [], "plain (example as is)": []}
    runs = {"trainer": lambda: trainer_steps(args, imgs),
            "plain (same work)": lambda: plain_steps(args, imgs, same_work=True),
            "plain (example as is)": lambda: plain_steps(args, imgs, same_work=False)}
    names = list(runs)
    round_ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        order = names[round_ % 3:] + names[:round_ % 3]  # who goes first rotates
        medians = {}
        for name in order:
            times = runs[name]()
            columns[name] += times
            medians[name] = statistics.median(times)
        for name in names:
            round_ratios[name].append(medians["trainer"] / medians[name])
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{k} {medians[k] * 1000:.1f} ms" for k in names), flush=True)

    base = statistics.median(columns["trainer"])
    print(f"\nstudio-tiny, {args.resolution}x{args.resolution}, batch 1, LoRA rank {args.rank}, 1 thread, "
          f"{args.rounds} interleaved rounds x {args.steps} steps\n")
    print("| loop | median ms/step | quartiles | trainer / loop (medians) | median of per-round ratios |")
    print("|---|---|---|---|---|")
    for name, times in columns.items():
        q = statistics.quantiles(times, n=4)
        med = statistics.median(times)
        print(f"| {name} | {med * 1000:.1f} | {q[0] * 1000:.1f}-{q[2] * 1000:.1f} | {base / med:.3f} "
              f"| {statistics.median(round_ratios[name]):.3f} |")


if __name__ == "__main__":
    main()
