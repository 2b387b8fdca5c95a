"""The fine-tuning trainer on the shipped studio-tiny model (128 px native; trained here at 64 px).

Plain pytest, no Django. Every run is a real diffusers + PEFT training of a few steps on one thread.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load

from generation.engine.contracts import InvalidRequest, ModelError
from generation.engine.lora_format import inspect_lora
from generation.engine.training import diffusion
from generation.engine.training.finetune import Trainer, load_image, read_state
from generation.engine.training.spec import TrainingImage, TrainingSpec

MODEL = Path(__file__).resolve().parents[2] / "generation/engine/weights/studio-tiny"
RES = 64


def _png(colour, size=(80, 64)) -> bytes:
    """A flat picture with a square in the middle (not square itself: the trainer centre-crops)."""
    img = Image.new("RGB", size, (20, 20, 20))
    w, h = size
    img.paste(colour, (w // 2 - 14, h // 2 - 14, w // 2 + 14, h // 2 + 14))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


IMAGES = tuple(TrainingImage(_png(c), "a zwx square") for c in ((255, 0, 255), (250, 10, 240), (255, 0, 230)))


def _spec(**kw) -> TrainingSpec:
    base = dict(base_model_path=str(MODEL), images=IMAGES, steps=10, rank=4, learning_rate=1e-3,
                resolution=RES, checkpoint_every=0, sample_every=0, sample_steps=3, seed=3)
    return TrainingSpec(**{**base, **kw})


def _lora_tensors(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


@pytest.fixture(scope="module")
def trainer():
    return Trainer(device="cpu")


@torch.no_grad()
def _denoising_loss(pipe, images, caption: str) -> float:
    """The model's v-prediction loss on the images at fixed timesteps and noise."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    pixels = torch.stack([load_image(image.png, RES, n) for n, image in enumerate(images, 1)])
    x0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    cond = pipe.text_encoder(diffusion.tokenize(pipe.tokenizer, [caption] * len(images), "cpu"))[0]
    g = torch.Generator().manual_seed(0)
    total = []
    for t in (150, 350, 550, 750, 950):
        noise = torch.randn(x0.shape, generator=g)
        ts = torch.full((len(images),), t)
        noisy, target = diffusion.noisy_and_target(sched, x0, noise, ts)
        total.append(diffusion.per_sample_loss(pipe.unet(noisy, ts, cond).sample, target).mean())
    return float(torch.stack(total).mean())


def test_lora_learns_the_images_and_sends_samples(trainer):
    from diffusers import StableDiffusionPipeline

    updates = []
    result = trainer.run(_spec(steps=16, learning_rate=5e-3, sample_every=8,
                               validation_prompts=("a zwx square", "a red circle"), validation_seeds=(0, 1)),
                         on_step=updates.append)
    assert not result.interrupted and result.steps_done == 16 and len(result.losses) == 16
    assert [u.step for u in updates] == list(range(1, 17))
    assert {u.phase for u in updates} == {"train"} and updates[-1].total_steps == 16
    with_samples = [u for u in updates if u.samples]
    assert [u.step for u in with_samples] == [8, 16]
    for png in with_samples[-1].samples:  # 2 prompts x 2 seeds
        assert Image.open(io.BytesIO(png)).size == (RES, RES)
    assert len(with_samples[-1].samples) == 4

    summary = inspect_lora(result.lora, model_path=str(MODEL))  # a kohya file that fits the model
    assert summary.format == "kohya" and summary.rank == 4 and summary.text_encoder_modules == ()
    assert summary.metadata["ss_steps"] == "16"
    assert json.loads(summary.metadata["ss_tag_frequency"]) == {"studio": {"a zwx square": 3}}

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None)
    before = _denoising_loss(pipe, IMAGES, "a zwx square")
    pipe.load_lora_weights(_lora_tensors(result.lora), adapter_name="zwx")
    after = _denoising_loss(pipe, IMAGES, "a zwx square")
    print(f"denoising loss on the training images: {before:.4f} before, {after:.4f} after")
    assert after < 0.8 * before, (before, after)


def test_cancel_checkpoints_and_resume_continues_exactly(trainer):
    spec = _spec(steps=10, checkpoint_every=4, train_text_encoder=True)
    whole = trainer.run(spec)

    checkpoints, steps = [], []
    stopped = trainer.run(spec, on_checkpoint=checkpoints.append, on_step=lambda u: steps.append(u.step),
                          should_cancel=lambda: len(steps) >= 6)
    assert stopped.interrupted and stopped.steps_done == 6 and steps == [1, 2, 3, 4, 5, 6]
    assert [c.step for c in checkpoints] == [4, 6]  # every 4 steps, then the cancel's own
    assert stopped.lora == checkpoints[-1].lora
    assert inspect_lora(stopped.lora).text_encoder_modules  # the text encoder's adapter is in it
    tensors, meta = read_state(checkpoints[-1].state)
    assert meta["step"] == "6" and tensors["losses"].tolist() == list(stopped.losses)
    assert any(k.startswith("optim.") for k in tensors) and "rng.train" in tensors

    resumed_steps = []
    resumed = trainer.run(spec, resume=checkpoints[-1], on_step=lambda u: resumed_steps.append(u.step))
    assert resumed_steps == [7, 8, 9, 10] and not resumed.interrupted
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5, abs=1e-7)
    a, b = _lora_tensors(whole.lora), _lora_tensors(resumed.lora)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)
    # Another training's checkpoint (here: another seed) is refused.
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(steps=10, seed=4), resume=checkpoints[0])
    assert info.value.field == "resume"


def test_pause_point_runs_between_steps(trainer):
    events = []
    trainer.run(_spec(steps=10), on_step=lambda u: events.append("step"),
                pause_point=lambda: events.append("pause"), pause_every_s=0.0,
                should_cancel=lambda: events.count("step") >= 4)
    assert events == ["pause", "step"] * 4  # 0 s: before every step

    calls, steps = [], []

    def pause():
        calls.append((time.monotonic(), time.monotonic()))

    started = time.monotonic()
    trainer.run(_spec(steps=12), on_step=lambda u: steps.append(time.monotonic()), pause_point=pause,
                pause_every_s=0.4)
    ends = [started] + [end for _, end in calls]
    longest_step = max(b - a for a, b in zip(steps, steps[1:]))
    assert calls, "a run longer than pause_every_s pauses"
    gaps = [call - end for (call, _), end in zip(calls, ends)] + [steps[-1] - ends[-1]]
    # A pause falls due when the next step would overrun: the gap is at most 0.4 s plus the
    # difference between two steps' durations (timed on a shared CPU: a step's full length).
    assert max(gaps[1:]) <= 0.4 + longest_step + 0.05, (gaps, longest_step)
    if longest_step < 0.1:  # steps much shorter than the interval: several per chunk
        assert len(calls) < len(steps) / 2


def test_dreambooth_makes_class_images_first_and_resumes_them(trainer):
    spec = _spec(method="dreambooth", instance_token="zwx", instance_prompt="a zwx square",
                 class_prompt="a square", prior_preservation=True, num_class_images=2, steps=10)
    phases = []
    ends = []
    whole = trainer.run(spec, on_step=lambda u: phases.append((u.phase, u.step, u.total_steps)),
                        on_checkpoint=ends.append)
    class_latents = read_state(ends[-1].state)[0]["class_latents"]
    assert class_latents.shape == (2, 4, RES // 8, RES // 8)
    assert phases[:2] == [("class_images", 1, 2), ("class_images", 2, 2)]
    assert phases[2:] == [("train", s, 10) for s in range(1, 11)]

    # Cancelled after the first class image: a step-0 checkpoint that keeps it.
    checkpoints, seen = [], []
    stopped = trainer.run(spec, on_checkpoint=checkpoints.append, on_step=seen.append,
                          should_cancel=lambda: len(seen) >= 1)
    assert stopped.interrupted and stopped.steps_done == 0 and [c.step for c in checkpoints] == [0]
    tensors, _ = read_state(checkpoints[0].state)
    torch.testing.assert_close(tensors["class_latents"], class_latents[:1])  # made from the seed

    phases.clear()
    ends.clear()
    resumed = trainer.run(spec, resume=checkpoints[0], on_step=lambda u: phases.append((u.phase, u.step)),
                          on_checkpoint=ends.append, should_cancel=lambda: ("train", 2) in phases)
    assert phases == [("class_images", 2), ("train", 1), ("train", 2)]  # only the missing class image
    torch.testing.assert_close(read_state(ends[-1].state)[0]["class_latents"], class_latents)
    assert resumed.losses == pytest.approx(whole.losses[:2], rel=1e-5, abs=1e-7)

    # Prior preservation is in the loss: without it the first step's loss is another.
    alone_steps = []
    alone = trainer.run(dataclasses.replace(spec, prior_preservation=False, num_class_images=0),
                        should_cancel=lambda: bool(alone_steps), on_step=alone_steps.append)
    assert alone.steps_done == 1 and alone.losses[0] != pytest.approx(whole.losses[0], rel=1e-3)


def test_full_finetune_writes_a_loadable_model(tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    spec = _spec(method="dreambooth", instance_token="zwx", instance_prompt="a zwx square",
                 prior_preservation=False, full_finetune=True, steps=10, learning_rate=1e-4)
    result = Trainer(device="cpu", work_dir=str(tmp_path)).run(spec)
    assert result.lora == b"" and result.steps_done == 10
    out = Path(result.model_dir)
    assert out.parent == tmp_path
    assert json.loads((out / "studio_model.json").read_text())["family"] == "studio-tiny"
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    base = UNet2DConditionModel.from_pretrained(MODEL, subfolder="unet")
    trained, original = pipe.unet.state_dict(), base.state_dict()
    changed = [k for k in original if not torch.equal(trained[k].float(), original[k].float())]
    assert len(changed) > len(original) // 2  # every UNet weight was trained, not an adapter
    image = pipe("a zwx square", height=RES, width=RES, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (RES, RES)


def test_refuses_bad_input_with_clear_errors(trainer, tmp_path):
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(images=IMAGES[:2]))
    assert info.value.field == "images"
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(images=IMAGES[:2] + (TrainingImage(b"GIF89a not really", "a zwx square"),)))
    assert info.value.field == "images" and "image 3 is not a readable image" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(method="dreambooth", instance_token="zwx", instance_prompt="a photo of a dog",
                          prior_preservation=False))
    assert info.value.field == "instance_prompt"
    with pytest.raises(ModelError):
        trainer.run(_spec(base_model_path=str(tmp_path)))
    from generation.engine.training.spec import TrainingCheckpoint

    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(), resume=TrainingCheckpoint(step=3, state=b"\x00" * 40, lora=b""))
    assert info.value.field == "resume"


def test_shared_loss_helpers_match_train_py_formulas():
    """diffusion.py is what train.py computed inline before it was shared: same numbers, bit for bit."""
    from diffusers import DDPMScheduler

    from generation.engine.training.models import scheduler_kwargs

    sched = DDPMScheduler(**scheduler_kwargs())
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn((3, 4, 8, 8), generator=g), torch.randn((3, 4, 8, 8), generator=g)
    t = torch.tensor([0, 500, 999])
    noisy, target = diffusion.noisy_and_target(sched, x0, noise, t)
    assert torch.equal(noisy, sched.add_noise(x0, noise, t))
    assert torch.equal(target, sched.get_velocity(x0, noise, t))
    pred = torch.randn((3, 4, 8, 8), generator=g)
    acp = sched.alphas_cumprod
    snr = acp / (1 - acp).clamp(min=1e-8)
    old = (pred - target).pow(2).mean(dim=(1, 2, 3)) * torch.clamp(snr[t], max=5.0) / (snr[t] + 1)
    new = diffusion.per_sample_loss(pred, target, t=t, snr_table=diffusion.snr(sched, "cpu"),
                                    min_snr_gamma=5.0)
    assert torch.equal(new, old) and new[2] == 0  # zero terminal SNR: the last timestep weighs nothing
    eps = DDPMScheduler(**{**scheduler_kwargs(), "prediction_type": "epsilon"})
    assert torch.equal(diffusion.noisy_and_target(eps, x0, noise, t)[1], noise)


def test_cross_attention_targets_put_the_lora_only_on_attn2_keys_and_values(trainer):
    result = trainer.run(_spec(lora_targets="cross_attention"))
    names = {key.split(".")[0] for key in _lora_tensors(result.lora)}
    assert names and all(n.startswith("lora_unet_") for n in names)
    assert all(n.endswith(("_attn2_to_k", "_attn2_to_v")) for n in names), sorted(names)[:4]
    assert any(n.endswith("_attn2_to_k") for n in names) and any(n.endswith("_attn2_to_v") for n in names)
    summary = inspect_lora(result.lora, model_path=str(MODEL))  # still a LoRA that fits the model
    assert len(summary.unet_modules) == len(names)
    everywhere = {key.split(".")[0] for key in _lora_tensors(trainer.run(_spec()).lora)}
    assert names < everywhere and any("_attn1_" in n for n in everywhere)  # the default: all attention
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(lora_targets="everything"))
    assert info.value.field == "lora_targets" and "cross_attention" in str(info.value)


def test_all_targets_add_convolution_and_feed_forward_loras_the_engine_fuses(trainer, tmp_path):
    """"all": the transformer blocks' every projection and the ResNet blocks' convolutions (a
    LoCon-style kohya file, 4-D conv weights), which the engine's LoraSet fuses like the rest."""
    import hashlib

    from diffusers import UNet2DConditionModel

    from generation.engine.contracts import LoraRef
    from generation.engine.lora import LoraSet

    result = trainer.run(_spec(lora_targets="all"))
    tensors = _lora_tensors(result.lora)
    names = {key.split(".")[0] for key in tensors}
    for suffix in ("_attn1_to_q", "_attn2_to_v", "_ff_net_0_proj", "_ff_net_2", "_proj_in", "_resnets_0_conv1",
                   "_resnets_0_conv2"):
        assert any(n.endswith(suffix) for n in names), suffix
    conv = next(n for n in names if n.endswith("_resnets_0_conv1"))
    down, up = tensors[f"{conv}.lora_down.weight"], tensors[f"{conv}.lora_up.weight"]
    assert (down.ndim, down.shape[0], tuple(down.shape[2:]), tuple(up.shape[1:])) == (4, 4, (3, 3), (4, 1, 1))
    summary = inspect_lora(result.lora, model_path=str(MODEL))
    assert len(summary.unet_modules) == len(names)

    unet = UNet2DConditionModel.from_pretrained(MODEL / "unet")
    weight = unet.get_submodule("down_blocks.0.resnets.0.conv1").weight
    base = weight.detach().clone()
    path = tmp_path / "all.safetensors"
    path.write_bytes(result.lora)
    loras = LoraSet({"unet": unet}, model_path=MODEL, device="cpu")
    loras.use([LoraRef(name="all", sha256=hashlib.sha256(result.lora).hexdigest(), path=str(path))])
    assert not torch.equal(weight, base)  # the convolution's LoRA is fused
    loras.use([])
    assert torch.equal(weight, base)


def test_several_class_prompts_spread_the_class_images_over_them(trainer):
    common = dict(method="dreambooth", instance_token="zwx", instance_prompt="a zwx square",
                  prior_preservation=True, num_class_images=2, steps=10)
    ends_one, ends_two, steps_one, steps_two = [], [], [], []
    # two training steps each (then cancelled): step 1 learns class image 0, step 2 class image 1
    one = trainer.run(_spec(class_prompt="a square", **common), on_checkpoint=ends_one.append,
                      on_step=steps_one.append, should_cancel=lambda: len(steps_one) >= 4)
    two = trainer.run(_spec(class_prompt="ignored when class_prompts are given",
                            class_prompts=("a square", "a red circle on a blue background"), **common),
                      on_checkpoint=ends_two.append, on_step=steps_two.append,
                      should_cancel=lambda: len(steps_two) >= 4)
    single = read_state(ends_one[-1].state)[0]["class_latents"]
    spread = read_state(ends_two[-1].state)[0]["class_latents"]
    torch.testing.assert_close(spread[0], single[0])  # image 0: prompt 0, seed + 0, as before
    assert not torch.allclose(spread[1], single[1], atol=1e-3)  # image 1: the second prompt
    assert one.steps_done == two.steps_done == 2
    assert one.losses[0] == pytest.approx(two.losses[0], rel=1e-5)  # same class image and prompt
    assert one.losses[1] != pytest.approx(two.losses[1], rel=1e-4)  # the second prompt's image
    for bad, message in (({"class_prompts": ("a square", "a zwx")}, "class prompt 2 must not contain"),
                         ({"class_prompts": ("a", "b", "c")}, "cannot cover 3 class prompts"),
                         ({"class_prompts": ("a square", " ")}, "class prompt 2 is empty")):
        with pytest.raises(InvalidRequest) as info:
            trainer.run(_spec(**{**common, **bad}))
        assert message in str(info.value)


def test_token_embeddings_train_only_the_instance_tokens_rows_and_load_as_a_lora(trainer, tmp_path):
    """Textual inversion beside the LoRA: the instance token's own ids (the demo tokenizer spells
    "zwx" as z, w, x) get trained rows, saved as a LoRA module on the embedding weight that the
    engine's LoraSet fuses like any other; every other row (so every old prompt's encoding) stays
    bit for bit the base model's, and a checkpoint resumes it exactly."""
    import hashlib

    from generation.engine.contracts import LoraRef
    from generation.engine.lora import LoraSet
    from generation.engine.training.spec import token_embeddings_of
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    common = dict(method="dreambooth", instance_token="zwx", instance_prompt="a zwx square",
                  class_prompts=("a square", "a red circle"), prior_preservation=True, num_class_images=2,
                  steps=10, learning_rate=5e-3)
    spec = _spec(train_token_embeddings=True, checkpoint_every=5, **common)
    assert token_embeddings_of(_spec(**common))  # DreamBooth's default
    assert not token_embeddings_of(_spec(train_token_embeddings=False, **common))
    checkpoints = []
    result = trainer.run(spec, on_checkpoint=checkpoints.append)
    tokenizer = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    ids = tokenizer.convert_tokens_to_ids(["z", "w", "x</w>"])
    summary = inspect_lora(result.lora, model_path=str(MODEL))
    assert summary.text_encoder_modules == ("embeddings.token_embedding",)  # no text-encoder LoRA asked
    assert summary.metadata["studio_token_embeddings"] == "z w x</w>"
    assert summary.unet_modules  # the UNet's LoRA as before

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None)
    embedding = pipe.text_encoder.get_submodule("embeddings.token_embedding").weight
    base = embedding.detach().clone()
    loras = LoraSet({"unet": pipe.unet, "text_encoder": pipe.text_encoder}, model_path=MODEL, device="cpu")
    path = tmp_path / "ti.safetensors"
    path.write_bytes(result.lora)
    loras.use([LoraRef(name="ti", sha256=hashlib.sha256(result.lora).hexdigest(), path=str(path))])
    fused = embedding.detach().clone()
    changed = (fused != base).any(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(ids)  # only z, w and x</w> move; every other row exactly as before
    delta = read_state(checkpoints[-1].state)[0]["param.text_encoder.token_embedding_delta"]
    torch.testing.assert_close(fused[ids] - base[ids], delta, rtol=1e-5, atol=1e-6)
    assert delta.abs().max() > 1e-3  # it did train
    loras.use([])
    assert torch.equal(embedding, base)

    # resumed from the step-5 checkpoint: the same LoRA as the run without a stop
    resumed = trainer.run(spec, resume=checkpoints[0])
    a, b = _lora_tensors(result.lora), _lora_tensors(resumed.lora)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)
    with pytest.raises(InvalidRequest) as info:
        trainer.run(_spec(train_token_embeddings=True))  # LoRA has no instance token
    assert info.value.field == "train_token_embeddings"
