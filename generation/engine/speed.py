"""What makes a loaded pipeline fast on a GPU (issue 13, "Speed on a GPU"), chosen by plain options.

- The dtype: float16 on CUDA by default; bfloat16 where the card has it and `dtype="bf16"` asks
  (its range avoids fp16 overflows, at the same speed on Ampere and later). engine.pick_dtype.
- Attention: PyTorch's scaled_dot_product_attention (diffusers' AttnProcessor2_0), set explicitly
  so a model whose config asked for another processor still gets it.
- channels-last memory format for the UNet and VAE convolutions (CUDA only: on CPU it is slower).
- VAE tiling: images larger than the VAE's own tile (512 px for SD 1.x) decode in overlapping
  tiles, so a 2048 px image does not need gigabytes for one decode. Smaller ones are untouched.
- torch.compile of the UNet (off by default: the first call of each new shape compiles for
  seconds to minutes). `warm_up` runs that first call before the worker serves anyone.

The GPU numbers are measured by benchmarks/gpu_speed.py when a GPU is lent; on CPU the tests check
that each option is applied and leaves the pictures as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .contracts import COMPILE_MODES


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = True  # CUDA only
    vae_tiling: bool = True  # CUDA only: only images larger than the VAE's tile are tiled
    compile_mode: str = ""  # "" (off) or one of COMPILE_MODES
    compile_backend: str = "inductor"  # "eager" in tests: the same wrapping, no code generation


def apply_speed_options(pipe, device: str, options: SpeedOptions) -> list[str]:
    """Apply `options` to a loaded pipeline on `device`; the names of what was applied."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    applied = []
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        applied.append("sdpa")
    if torch.device(device).type == "cuda":
        if options.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            applied.append("channels_last")
        if options.vae_tiling:
            pipe.vae.enable_tiling()
            applied.append("vae_tiling")
    if options.compile_mode:
        if options.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {options.compile_mode!r}; one of {', '.join(COMPILE_MODES)}")
        mode = options.compile_mode if options.compile_backend == "inductor" else None  # modes are inductor's
        # dynamic=None: the first shape compiles static; a second one (another size, a batch of
        # several users, one smaller after a cancel) compiles once with dynamic shapes, not per size.
        pipe.unet = torch.compile(pipe.unet, mode=mode, backend=options.compile_backend, fullgraph=False)
        applied.append(f"compile:{options.compile_mode}")
    return applied
