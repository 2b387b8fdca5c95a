"""Sampler key -> diffusers scheduler, built from the model's own scheduler config."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from .contracts import SAMPLERS

# key -> (scheduler class, overrides). A1111 equivalents as listed in the diffusers docs.
_SCHEDULERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    # DDIM's constructor defaults to clip_sample=True (a pixel-space setting): it clips the
    # predicted latents to [-1, 1] and washes every image out. Latent models never want it.
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "unipc": (UniPCMultistepScheduler, {}),
}
assert set(_SCHEDULERS) == set(SAMPLERS), "every sampler needs a scheduler"


def make_scheduler(sampler: str, base_config):
    """A fresh scheduler for one generation (schedulers keep per-run state)."""
    cls, overrides = _SCHEDULERS[sampler]
    return cls.from_config(base_config, **overrides)
