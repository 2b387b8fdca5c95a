"""The diffusion-training pieces shared by the demo model's recipe (train.py) and the fine-tuning
trainer (finetune.py): tokenising captions, bfloat16 autocast, the noised input and target of a
batch of latents for the scheduler's prediction type, the per-sample loss (optionally min-SNR
weighted) and the CPU attention choice. No Django; torch is imported by the callers anyway.
"""

from __future__ import annotations

import torch


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """Mixed-precision autocast (bfloat16 by default): about 2x faster on CPUs with AMX/AVX-512
    BF16 and on GPUs; the trained weights stay float32."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


def tokenize(tokenizer, texts: list[str], device: torch.device | str) -> torch.Tensor:
    """Token ids padded to the tokenizer's full length, as the pipelines encode prompts."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def noisy_and_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """The UNet's input at timesteps ``t`` and what it must predict, by the scheduler's
    ``prediction_type``: the noise (epsilon), the velocity (v_prediction) or the clean latents."""
    noisy = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    elif kind == "sample":
        target = x0
    else:
        raise ValueError(f"unknown prediction type {kind!r}")
    return noisy, target


def snr(scheduler, device: torch.device | str) -> torch.Tensor:
    """Signal-to-noise ratio of every training timestep (zero at a zero-terminal-SNR schedule's end)."""
    acp = scheduler.alphas_cumprod.to(device)
    return acp / (1 - acp).clamp(min=1e-8)


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, *, t: torch.Tensor | None = None,
                    snr_table: torch.Tensor | None = None, min_snr_gamma: float = 0.0,
                    prediction_type: str = "v_prediction") -> torch.Tensor:
    """Mean squared error per sample (shape [batch]); with ``min_snr_gamma`` weighted by
    min(SNR, gamma) / (SNR + 1) for v-prediction, min(SNR, gamma) / SNR for epsilon (Hang et al. 2023)."""
    loss = (pred - target).pow(2).mean(dim=tuple(range(1, pred.dim())))
    if min_snr_gamma:
        s = snr_table[t]
        denominator = s + 1 if prediction_type == "v_prediction" else s.clamp(min=1e-8)
        loss = loss * torch.clamp(s, max=min_snr_gamma) / denominator
    return loss


def use_plain_attention_on_cpu(unet, device: torch.device | str) -> None:
    """Plain matmul attention for training on the CPU: torch's CPU flash-attention backward is slow
    for short sequences and small heads (it took 40% of a studio-tiny step); inference keeps the
    default."""
    if torch.device(device).type == "cpu":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
