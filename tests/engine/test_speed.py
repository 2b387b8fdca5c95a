"""engine.speed on CPU: SDPA attention is set, the CUDA-only options stay off, and a compiled UNet
(the "eager" backend: torch.compile's wrapping and graph capture without code generation, fast
enough for a test) gives the same pictures, LoRAs included, after a warm-up. The GPU speed-ups
themselves are measured by benchmarks/gpu_speed.py on a GPU."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from generation.engine import Engine, GenerationRequest
from generation.engine.contracts import LoraRef
from generation.engine.lora_format import kohya_from_peft
from generation.engine.speed import SpeedOptions
from tests.engine.test_lora import peft_states

REQUEST = GenerationRequest(prompt="a red circle on a blue background", width=64, height=64, steps=3, seed=5,
                            sampler="euler")


@pytest.fixture(scope="module")
def lora(demo_model_path, tmp_path_factory) -> LoraRef:
    unet, text_encoder = peft_states(demo_model_path, rank=4, seed=7, scale=0.3)
    data = kohya_from_peft(unet, text_encoder, alpha=4.0)
    path = tmp_path_factory.mktemp("speed-lora") / "lora.safetensors"
    path.write_bytes(data)
    return LoraRef(name="speed", sha256=hashlib.sha256(data).hexdigest(), path=str(path), weight=0.8)


def pixels(engine: Engine, request: GenerationRequest) -> bytes:
    return engine.generate(request, previews=False).images[0].png


def test_on_cpu_attention_is_sdpa_and_the_cuda_options_stay_off(engine):
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert engine.speed_applied == ["sdpa"]
    assert all(isinstance(p, AttnProcessor2_0) for p in engine.pipe.unet.attn_processors.values())
    assert not engine.pipe.vae.use_tiling


def test_a_compiled_unet_warms_up_and_draws_the_same_pictures_with_and_without_a_lora(engine, demo_model_path, lora):
    compiled = Engine(demo_model_path, device="cpu",
                      speed=SpeedOptions(compile_mode="default", compile_backend="eager"))
    assert "compile:default" in compiled.speed_applied
    assert isinstance(compiled.pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.warm_up() > 0
    assert pixels(compiled, REQUEST) == pixels(engine, REQUEST)
    with_lora = dataclasses.replace(REQUEST, loras=(lora,))
    assert pixels(compiled, with_lora) == pixels(engine, with_lora) != pixels(engine, REQUEST)
    assert pixels(compiled, REQUEST) == pixels(engine, REQUEST)  # the LoRA left both


def test_an_unknown_compile_mode_is_refused(demo_model_path):
    with pytest.raises(ValueError, match="unknown compile mode"):
        Engine(demo_model_path, device="cpu", speed=SpeedOptions(compile_mode="fastest"))
