"""The fine-tuning trainer: LoRA and DreamBooth (optionally a full UNet fine-tune) on diffusers + PEFT.

Built like diffusers' ``examples/dreambooth/train_dreambooth_lora.py``: a PEFT ``LoraConfig`` on the
UNet's attention projections (``to_q``/``to_k``/``to_v``/``to_out.0``) and, with
``train_text_encoder``, on the CLIP text encoder's (``q_proj``/``k_proj``/``v_proj``/``out_proj``);
the model's own noise schedule and prediction type (studio-tiny: v-prediction, zero terminal SNR);
AdamW; gradients clipped to norm 1; DreamBooth's prior preservation adds the class images' loss
times ``prior_loss_weight``. Differences, all for speed on small data: the VAE is frozen, so every
training image is encoded once (its latent mean and std are cached and a latent is sampled each
step); with a frozen text encoder the captions' embeddings are cached too; class images are made
by the base model as latents (no decode and re-encode).

Driven by plain data (``spec.TrainingSpec``) and hooks, like the Engine; no Django. It loads its
own copy of the base model. Resumable exactly: a ``TrainingCheckpoint.state`` is one safetensors
blob with the trained tensors, the AdamW state, the step, the random generator's state, the losses
so far and DreamBooth's class latents, so a resumed run repeats an uninterrupted one's losses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..contracts import InvalidRequest, ModelError
from ..loading import dtype_kwarg, quiet_progress
from ..lora_format import kohya_from_peft
from . import diffusion
from .spec import (TrainingCheckpoint, TrainingResult, TrainingSpec, TrainingUpdate, class_prompts_of,
                   lora_targets_of, token_embeddings_of, validate_spec)

UNET_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
# spec.lora_targets -> PEFT target_modules (a list of module-name suffixes, or a full-match regex)
UNET_LORA_TARGETS: dict[str, list[str] | str] = {
    "attention": list(UNET_TARGET_MODULES),
    "cross_attention": r".*\.attn2\.(to_k|to_v)",
    # LoCon-like: the transformer blocks' every projection and the ResNet blocks' convolutions too
    "all": r".*\.(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2)",
}
TEXT_ENCODER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
# The text encoder's input embeddings (transformers' CLIPTextModel path, without "text_model."):
# with spec.train_token_embeddings the instance token's rows get a trained offset, saved in the
# LoRA file as one more text-encoder LoRA module on this weight (up: one-hot rows, down: offsets).
TOKEN_EMBEDDING_MODULE = "embeddings.token_embedding"
TOKEN_DELTA_PARAM = "text_encoder.token_embedding_delta"
# learning rates relative to spec.learning_rate: the token rows' (textual inversion), and the
# adapters' (1; benchmarks/finetune_shape.py sets 0 to measure textual inversion alone)
TOKEN_EMBEDDING_LR_SCALE = 1.0
ADAPTER_LR_SCALE = 1.0
# DreamBooth's prior weight ramps up from 0 over this fraction of the steps (0: full from the start)
PRIOR_WARMUP = 0.0
# the learning rate over the run: "constant", or "cosine" (from the full rate down to 0 at the last
# step); a function of the step alone, so a resumed run follows it exactly
LR_SCHEDULE = "constant"
STATE_FORMAT = "studio-finetune-state/1"
ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY, MAX_GRAD_NORM = (0.9, 0.999), 1e-8, 1e-2, 1.0
_DEFAULT_GUIDANCE = 7.0  # for samples, when the model's studio_model.json names none


class _Cancelled(Exception):
    pass


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers warns about any dtype given to ModelMixin.to(); casting frozen weights is intended."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def training_dtype(dtype, device: str) -> torch.dtype:
    """float32, or bfloat16 autocast where asked (or by default on a GPU that has it). float16 is
    taken as "half precision" and means bfloat16 on such a GPU (float16 training would need a grad
    scaler), float32 elsewhere. On a CPU, bfloat16 is autocast only (the weights stay float32)."""
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                 "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}.get(dtype, dtype)
        if isinstance(dtype, str):
            raise ValueError(f"unknown dtype {dtype!r}")
    bf16_ok = torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
    if dtype is None or dtype == torch.float16:
        return torch.bfloat16 if bf16_ok else torch.float32
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"the trainer trains in float32 or bfloat16, not {dtype}")
    return dtype


def load_image(png: bytes, resolution: int, number: int) -> torch.Tensor:
    """RGB in [-1, 1], shape (3, R, R): the shorter side resized to R, then centre-cropped."""
    try:
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequest("images", f"image {number} is not a readable image ({exc})") from exc
    w, h = rgb.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    rgb = rgb.crop((left, top, left + resolution, top + resolution))
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(resolution, resolution, 3)
    return data.permute(2, 0, 1).float() / 127.5 - 1


def spec_fingerprint(spec: TrainingSpec) -> str:
    """What a checkpoint must match to be resumed: the images, captions and every setting that
    shapes the run (not the step count, the model path or the checkpoint/sample cadence)."""
    h = hashlib.sha256()
    for image in spec.images:
        h.update(hashlib.sha256(image.png).digest())
        h.update(image.caption.encode())
    fields = {k: getattr(spec, k) for k in (
        "method", "rank", "alpha", "learning_rate", "resolution", "batch_size", "train_text_encoder",
        "seed", "instance_prompt", "instance_token", "class_prompt", "prior_preservation",
        "num_class_images", "prior_loss_weight", "full_finetune", "sample_steps")}
    # later fields count only when set, so checkpoints written before them still resume
    if lora_targets_of(spec) != "attention":
        fields["lora_targets"] = lora_targets_of(spec)
    if token_embeddings_of(spec):
        fields["train_token_embeddings"] = True
    if spec.class_prompts:
        fields["class_prompts"] = list(spec.class_prompts)
    h.update(json.dumps(fields, sort_keys=True).encode())
    return h.hexdigest()


def read_state(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A checkpoint's tensors and metadata; InvalidRequest("resume") when it is not one."""
    from safetensors.torch import load

    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        meta = header.get("__metadata__") or {}
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, they are not our state
        raise InvalidRequest("resume", f"the checkpoint is not a readable trainer state ({exc})") from exc
    if meta.get("format") != STATE_FORMAT:
        raise InvalidRequest("resume", f"the checkpoint is not a {STATE_FORMAT} trainer state")
    return tensors, meta


class Trainer:
    """``Trainer(device=..., dtype=...).run(spec, ...)`` trains one LoRA (or full UNet) per call.

    ``work_dir`` (an addition to the agreed interface): where a full fine-tune writes its model
    folder (default: a new temporary directory; the caller moves or deletes it).
    """

    def __init__(self, *, device: str | None = None, dtype=None, work_dir: str | None = None):
        from ..engine import pick_device

        self.device = pick_device(device)
        self.dtype = training_dtype(dtype, self.device)
        self.work_dir = work_dir

    def run(self, spec: TrainingSpec, *, resume: TrainingCheckpoint | None = None,
            on_step: Callable[[TrainingUpdate], None] | None = None,
            on_checkpoint: Callable[[TrainingCheckpoint], None] | None = None,
            should_cancel: Callable[[], bool] | None = None,
            pause_point: Callable[[], None] | None = None,
            pause_every_s: float = 2.0) -> TrainingResult:
        validate_spec(spec)
        if spec.batch_size < 1:
            raise InvalidRequest("batch_size", "must be at least 1")
        return _Run(self, spec, on_step=on_step, on_checkpoint=on_checkpoint, should_cancel=should_cancel,
                    pause_point=pause_point, pause_every_s=pause_every_s).execute(resume)


class _Run:
    """One call of Trainer.run: the loaded components and the training state."""

    def __init__(self, trainer: Trainer, spec: TrainingSpec, *, on_step, on_checkpoint, should_cancel,
                 pause_point, pause_every_s):
        self.spec = spec
        self.device = torch.device(trainer.device)
        self.dtype = trainer.dtype
        self.work_dir = trainer.work_dir
        self.on_step = on_step or (lambda update: None)
        self.on_checkpoint = on_checkpoint or (lambda checkpoint: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.pause_point = pause_point
        self.pause_every_s = max(0.0, float(pause_every_s))
        self.full = spec.full_finetune
        self.prior = spec.method == "dreambooth" and spec.prior_preservation
        self.token_embeddings = token_embeddings_of(spec)
        # the text encoder runs in every step (not cached) when it, or the token rows, are trained
        self.live_text = spec.train_text_encoder or self.token_embeddings
        self.token_ids: list[int] = []
        self.alpha = float(spec.alpha if spec.alpha is not None else spec.rank)
        self.autocast_on = self.dtype != torch.float32
        self.losses: list[float] = []
        self.step = 0
        self.started = time.monotonic()
        self._last_pause = time.monotonic()
        self._last_chunk_s = 0.0
        self._epoch_orders: dict[int, list[int]] = {}

    # ------------------------------------------------------------------------------- the run

    def execute(self, resume: TrainingCheckpoint | None) -> TrainingResult:
        spec = self.spec
        state, meta = ({}, {})
        if resume is not None:
            state, meta = read_state(resume.state)
            if meta.get("fingerprint") != spec_fingerprint(spec) or meta.get("kind") != self._kind():
                raise InvalidRequest("resume", "the checkpoint belongs to another training "
                                               "(different images, captions or settings)")
            if int(meta["step"]) > spec.steps:
                raise InvalidRequest("resume", f"the checkpoint is at step {meta['step']}, past the "
                                               f"{spec.steps} steps of this training")
        pixels = torch.stack([load_image(image.png, spec.resolution, n)
                              for n, image in enumerate(spec.images, 1)])
        self._load_model()
        self._encode_images(pixels)
        try:
            if self.prior:
                self._make_class_latents(state.get("class_latents"))
        except _Cancelled:
            self._make_trainable()
            return self._stop(interrupted=True)
        self._encode_class_prompt()
        self._make_trainable()
        if resume is not None:
            self._restore(state, meta)
        self._train()
        return self._stop(interrupted=self.step < spec.steps)

    def _kind(self) -> str:
        return "full" if self.full else "lora"

    # ------------------------------------------------------------------------------- set-up

    def _load_model(self) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        path = self.spec.base_model_path
        try:
            with quiet_progress():
                pipe = StableDiffusionPipeline.from_pretrained(
                    path, local_files_only=True, safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False, **dtype_kwarg(torch.float32))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot load the base model {path}: {exc}") from exc
        self.tokenizer, self.text_encoder = pipe.tokenizer, pipe.text_encoder
        self.vae, self.unet = pipe.vae, pipe.unet
        self.scheduler_config = pipe.scheduler.config
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        for module in (self.vae, self.text_encoder, self.unet):
            module.requires_grad_(False)
            module.eval()
            module.to(self.device)
        # Frozen weights in bfloat16 on a GPU (half the memory); on a CPU they stay float32 under
        # bfloat16 autocast (as train.py): bfloat16 weights there are up to 10x slower.
        if self.dtype != torch.float32 and self.device.type != "cpu":
            frozen = [self.vae] + [m for m, trained in ((self.text_encoder, self.spec.train_text_encoder),
                                                        (self.unet, True)) if not (self.full and trained)]
            with _quiet_diffusers():
                for module in frozen:
                    module.to(dtype=self.dtype)
        self.guidance = _DEFAULT_GUIDANCE
        info = Path(path) / "studio_model.json"
        if info.is_file():
            try:
                studio = json.loads(info.read_text())
                self.guidance = float(studio.get("default_guidance_scale", _DEFAULT_GUIDANCE))
            except (ValueError, TypeError, AttributeError):
                pass

    @torch.no_grad()
    def _encode_images(self, pixels: torch.Tensor) -> None:
        """Latent mean and std of every training image, once (the VAE is frozen); token ids of the
        captions, and their embeddings too when the text encoder is frozen."""
        spec = self.spec
        means, stds = [], []
        for a in range(0, len(pixels), 8):
            with diffusion.autocast(self.device, self.autocast_on, self.dtype):
                dist = self.vae.encode(pixels[a:a + 8].to(self.device, dtype=self.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        self.lat_mean, self.lat_std = torch.cat(means), torch.cat(stds)
        self.scaling = float(self.vae.config.scaling_factor)
        self.shift = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        self.ids = diffusion.tokenize(self.tokenizer, [image.caption for image in spec.images], self.device)
        self.cond_cache = None
        if not self.live_text:
            self.cond_cache = self._encode_text(self.ids).float()

    def _encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        with diffusion.autocast(self.device, self.autocast_on, self.dtype):
            return self.text_encoder(ids)[0]

    def _pipeline(self):
        from diffusers import EulerDiscreteScheduler

        from .models import assemble_pipeline

        return assemble_pipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                 unet=self.unet,
                                 scheduler=EulerDiscreteScheduler.from_config(self.scheduler_config))

    @torch.no_grad()
    def _make_class_latents(self, stored: torch.Tensor | None) -> None:
        """DreamBooth's class images, made by the base model (Euler, spec.sample_steps, seed
        spec.seed + i for image i) and kept as latents; a resumed run takes the stored ones and
        makes only what is missing."""
        spec = self.spec
        have = [] if stored is None else list(stored.to(self.device).unbind(0))
        total = spec.num_class_images
        prompts = class_prompts_of(spec)
        pipe = self._pipeline() if len(have) < total else None
        for i in range(len(have), total):
            if self.should_cancel():
                break
            self._between_chunks()
            started = time.monotonic()
            generator = torch.Generator("cpu").manual_seed(spec.seed + i)
            with diffusion.autocast(self.device, self.autocast_on, self.dtype):
                out = pipe(prompts[i % len(prompts)], height=spec.resolution, width=spec.resolution,
                           num_inference_steps=spec.sample_steps, guidance_scale=self.guidance,
                           generator=generator, output_type="latent")
            have.append(out.images[0].float())
            self.class_latents = torch.stack(have)
            self._last_chunk_s = time.monotonic() - started
            self.on_step(TrainingUpdate(step=i + 1, total_steps=total, loss=0.0, learning_rate=0.0,
                                        phase="class_images"))
        empty = self.lat_mean.new_zeros((0, *self.lat_mean.shape[1:]))
        self.class_latents = torch.stack(have) if have else empty
        if len(have) < total:
            raise _Cancelled

    def _encode_class_prompt(self) -> None:
        if not self.prior:
            return
        # one row per class prompt; class image i was made from prompt i % len(prompts)
        self.class_ids = diffusion.tokenize(self.tokenizer, list(class_prompts_of(self.spec)), self.device)
        self.class_cond = None
        if self.cond_cache is not None:
            with torch.no_grad():
                self.class_cond = self._encode_text(self.class_ids).float()

    def _make_trainable(self) -> None:
        """LoRA adapters (initialised from the seed) or the whole UNet; the AdamW optimiser."""
        from peft import LoraConfig, inject_adapter_in_model

        spec = self.spec
        if self.full:
            self.unet.requires_grad_(True)
            if spec.train_text_encoder:
                self.text_encoder.requires_grad_(True)
        else:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [],
                                       device_type=self.device.type):
                torch.manual_seed(spec.seed)
                self.unet.add_adapter(LoraConfig(
                    r=spec.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                    target_modules=UNET_LORA_TARGETS[lora_targets_of(spec)]))
                if spec.train_text_encoder:
                    # PEFT directly: transformers' add_adapter wants a newer PEFT than requirements pin.
                    inject_adapter_in_model(LoraConfig(
                        r=spec.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                        target_modules=list(TEXT_ENCODER_TARGET_MODULES)), self.text_encoder)
        self.params: list[tuple[str, torch.nn.Parameter]] = []
        for prefix, module in (("unet", self.unet), ("text_encoder", self.text_encoder)):
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # trained tensors in float32 (diffusers' cast_training_params)
                    self.params.append((f"{prefix}.{name}", p))
        if self.token_embeddings:
            self._add_token_delta()
        groups = [{"params": [p for name, p in self.params if name != TOKEN_DELTA_PARAM],
                   "lr": spec.learning_rate * ADAPTER_LR_SCALE}]
        if self.token_embeddings:  # the token rows last, so the optimizer's state indices follow self.params
            groups.append({"params": [self.token_delta], "lr": spec.learning_rate * TOKEN_EMBEDDING_LR_SCALE})
        self.optimizer = torch.optim.AdamW(groups, lr=spec.learning_rate,
                                           betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
        self.generator = torch.Generator("cpu").manual_seed(spec.seed)
        diffusion.use_plain_attention_on_cpu(self.unet, self.device)

    def _add_token_delta(self) -> None:
        """Textual inversion beside the LoRA: a trained offset (zero at first) for the input
        embedding of each of the instance token's own tokens (the demo tokenizer spells "zwx" as
        z, w, x), added by a hook on the embedding layer wherever those ids occur. Special tokens
        (start, end/pad, unknown) are never trained, so prompts without the token's ids encode
        exactly as the base model's."""
        tok = self.tokenizer
        special = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
        ids = []
        for token_id in tok.convert_tokens_to_ids(tok.tokenize(self.spec.instance_token.strip())):
            if token_id is not None and token_id not in special and token_id not in ids:
                ids.append(token_id)
        self.token_ids = ids
        if not ids:
            self.token_embeddings = False
            return
        layer = self.text_encoder.get_submodule(TOKEN_EMBEDDING_MODULE)
        self.token_id_tensor = torch.tensor(ids, device=self.device)
        self.token_delta = torch.nn.Parameter(torch.zeros(len(ids), layer.weight.shape[1], device=self.device))
        self.params.append((TOKEN_DELTA_PARAM, self.token_delta))

        def add_delta(module, args, output):
            hits = (args[0].unsqueeze(-1) == self.token_id_tensor).to(output.dtype)  # [B, L, k]
            return output + hits @ self.token_delta.to(output.dtype)

        layer.register_forward_hook(add_delta)

    # ------------------------------------------------------------------------------- training

    def _train(self) -> None:
        spec = self.spec
        self.unet.train()
        if spec.train_text_encoder:
            self.text_encoder.train()
        trained = [p for _, p in self.params]
        while self.step < spec.steps:
            if self.should_cancel():
                return
            self._between_chunks()
            started = time.monotonic()
            loss = self._loss(self.step)
            self._set_learning_rate(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, MAX_GRAD_NORM)
            self.optimizer.step()
            self.step += 1
            self.losses.append(float(loss.detach()))
            self._last_chunk_s = time.monotonic() - started
            samples = ()
            if self._samples_due():
                samples = self._samples()
            self.on_step(TrainingUpdate(step=self.step, total_steps=spec.steps, loss=self.losses[-1],
                                        learning_rate=spec.learning_rate, phase="train", samples=samples))
            if spec.checkpoint_every and self.step % spec.checkpoint_every == 0 and self.step < spec.steps:
                self.on_checkpoint(self.checkpoint())

    def _indices(self, step: int) -> list[int]:
        """The batch of a step: epochs over the images in an order drawn from (seed, epoch), so it
        is a function of the step alone."""
        n, b = len(self.spec.images), self.spec.batch_size
        out = []
        for pos in range(step * b, step * b + b):
            epoch = pos // n
            if epoch not in self._epoch_orders:
                g = torch.Generator("cpu").manual_seed(self.spec.seed * 1_000_003 + epoch)
                self._epoch_orders = {epoch: torch.randperm(n, generator=g).tolist()}
            out.append(self._epoch_orders[epoch][pos % n])
        return out

    def _loss(self, step: int) -> torch.Tensor:
        spec, g = self.spec, self.generator
        idx = self._indices(step)
        mean, std = self.lat_mean[idx], self.lat_std[idx]
        eps = torch.randn(mean.shape, generator=g).to(self.device)
        x0 = (mean + std * eps - self.shift) * self.scaling
        b = len(idx)
        if self.prior:
            cidx = [(step * b + k) % len(self.class_latents) for k in range(b)]
            pidx = [c % len(self.class_ids) for c in cidx]  # the class prompt of each class image
            x0 = torch.cat([x0, self.class_latents[cidx]])
        if self.live_text:
            ids = self.ids[idx]
            if self.prior:
                ids = torch.cat([ids, self.class_ids[pidx]])
            cond = None  # encoded below, under autocast, with gradients
        else:
            cond = self.cond_cache[idx]
            if self.prior:
                cond = torch.cat([cond, self.class_cond[pidx]])
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g)
        t = t.to(self.device)
        noisy, target = diffusion.noisy_and_target(self.noise_scheduler, x0, noise, t)
        with diffusion.autocast(self.device, self.autocast_on, self.dtype):
            if cond is None:
                cond = self.text_encoder(ids)[0]
            pred = self.unet(noisy, t, cond).sample.float()
        per_sample = diffusion.per_sample_loss(pred, target.float())
        if self.prior:
            return per_sample[:b].mean() + self._prior_weight(step) * per_sample[b:].mean()
        return per_sample.mean()

    def _set_learning_rate(self, step: int) -> None:
        if LR_SCHEDULE == "constant":
            return
        factor = 0.5 * (1 + math.cos(math.pi * step / self.spec.steps))
        for group in self.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * factor

    def _prior_weight(self, step: int) -> float:
        """prior_loss_weight, ramped up linearly from 0 over the first PRIOR_WARMUP of the steps
        (0: the full weight from the first step)."""
        warmup = PRIOR_WARMUP * self.spec.steps
        if warmup <= 0 or step >= warmup:
            return self.spec.prior_loss_weight
        return self.spec.prior_loss_weight * step / warmup

    def _between_chunks(self) -> None:
        """Call pause_point when the next chunk (as long as the last one) would end more than
        pause_every_s after the previous call returned."""
        if self.pause_point is None:
            return
        if time.monotonic() - self._last_pause + self._last_chunk_s >= self.pause_every_s:
            self.pause_point()
            self._last_pause = time.monotonic()

    # ------------------------------------------------------------------------------- samples

    def _samples_due(self) -> bool:
        every = self.spec.sample_every
        return bool(every) and (self.step % every == 0 or self.step == self.spec.steps)

    @torch.no_grad()
    def _samples(self) -> tuple[bytes, ...]:
        """PNGs of the validation prompts x seeds with the adapter as it stands (prompt-major)."""
        spec = self.spec
        prompts = spec.validation_prompts or (spec.instance_prompt or spec.images[0].caption,)
        pipe = self._pipeline()
        self.unet.eval()
        self.text_encoder.eval()
        out = []
        try:
            for prompt in prompts:
                for seed in spec.validation_seeds:
                    self._between_chunks()
                    started = time.monotonic()
                    with diffusion.autocast(self.device, self.autocast_on, self.dtype):
                        image = pipe(prompt, height=spec.resolution, width=spec.resolution,
                                     num_inference_steps=spec.sample_steps, guidance_scale=self.guidance,
                                     generator=torch.Generator("cpu").manual_seed(seed)).images[0]
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    out.append(buffer.getvalue())
                    self._last_chunk_s = time.monotonic() - started
        finally:
            self.unet.train()
            if spec.train_text_encoder:
                self.text_encoder.train()
        return tuple(out)

    # ------------------------------------------------------------------------------- state

    def checkpoint(self) -> TrainingCheckpoint:
        from safetensors.torch import save

        tensors: dict[str, torch.Tensor] = {}
        for i, (name, p) in enumerate(self.params):
            tensors[f"param.{name}"] = p.detach().to("cpu", copy=True).contiguous()
            for key, value in self.optimizer.state.get(p, {}).items():
                tensors[f"optim.{i}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
        tensors["rng.train"] = self.generator.get_state().clone()
        tensors["losses"] = torch.tensor(self.losses, dtype=torch.float64)
        if self.prior:
            tensors["class_latents"] = self.class_latents.detach().to("cpu", copy=True).contiguous()
        meta = {"format": STATE_FORMAT, "step": str(self.step), "kind": self._kind(),
                "fingerprint": spec_fingerprint(self.spec), "params": str(len(self.params))}
        return TrainingCheckpoint(step=self.step, state=save(tensors, metadata=meta), lora=self.lora_bytes())

    def _restore(self, state: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        if int(meta.get("params", -1)) != len(self.params):
            raise InvalidRequest("resume", "the checkpoint's tensors do not fit this model")
        optimizer_state = {}
        with torch.no_grad():
            for i, (name, p) in enumerate(self.params):
                saved = state.get(f"param.{name}")
                if saved is None or saved.shape != p.shape:
                    raise InvalidRequest("resume", f"the checkpoint's tensors do not fit this model ({name})")
                p.copy_(saved)
                entry = {key.split(".", 2)[2]: value for key, value in state.items()
                         if key.startswith(f"optim.{i}.")}
                if entry:
                    optimizer_state[i] = entry
        self.optimizer.load_state_dict({"state": optimizer_state,
                                        "param_groups": self.optimizer.state_dict()["param_groups"]})
        self.generator.set_state(state["rng.train"])
        self.losses = [float(v) for v in state["losses"].tolist()]
        self.step = int(meta["step"])

    def lora_bytes(self) -> bytes:
        """The adapter as a kohya/A1111 ``.safetensors`` (b"" for a full fine-tune)."""
        if self.full:
            return b""
        from peft.utils import get_peft_model_state_dict

        unet_state = {k: v.detach().to("cpu", torch.float32).contiguous()
                      for k, v in get_peft_model_state_dict(self.unet).items()}
        text_state = {}
        if self.spec.train_text_encoder:
            text_state = {k: v.detach().to("cpu", torch.float32).contiguous()
                          for k, v in get_peft_model_state_dict(self.text_encoder).items()}
        if self.token_embeddings:
            text_state |= self._token_delta_as_lora()
        return kohya_from_peft(unet_state, text_state, alpha=self.alpha, metadata=self._lora_metadata())

    def _token_delta_as_lora(self) -> dict[str, torch.Tensor]:
        """The token rows' offsets as a LoRA module on the embedding weight [vocab, width]: up is
        one-hot [vocab, k] (row i of the token's i-th id), down the offsets [k, width] divided by
        the module's scale alpha / k, so fusing ``W += alpha / k * up @ down`` adds exactly the
        offsets to those rows and nothing (an exact zero) to any other."""
        layer = self.text_encoder.get_submodule(TOKEN_EMBEDDING_MODULE)
        k = len(self.token_ids)
        up = torch.zeros(layer.weight.shape[0], k)
        for i, token_id in enumerate(self.token_ids):
            up[token_id, i] = 1.0
        down = self.token_delta.detach().to("cpu", torch.float32) * (k / self.alpha)
        return {f"{TOKEN_EMBEDDING_MODULE}.lora_A.weight": down.contiguous(),
                f"{TOKEN_EMBEDDING_MODULE}.lora_B.weight": up}

    def _lora_metadata(self) -> dict[str, str]:
        """kohya's ss_* fields (ss_tag_frequency as sd-scripts counts caption tags: comma-separated;
        A1111 and the LoRA import read trigger words from it) and studio_* fields."""
        spec = self.spec
        tags: dict[str, int] = {}
        for image in spec.images:
            for tag in (t.strip() for t in image.caption.split(",")):
                if tag:
                    tags[tag] = tags.get(tag, 0) + 1
        fields = {
            "ss_network_module": "networks.lora", "ss_network_dim": str(spec.rank),
            "ss_network_alpha": f"{self.alpha:g}", "ss_steps": str(self.step),
            "ss_max_train_steps": str(spec.steps), "ss_seed": str(spec.seed),
            "ss_tag_frequency": json.dumps({"studio": tags}),
            "ss_resolution": f"({spec.resolution}, {spec.resolution})",
            "ss_learning_rate": f"{spec.learning_rate:g}", "ss_num_train_images": str(len(spec.images)),
            "studio_base_family": "sd2" if self.unet.config.cross_attention_dim == 1024 else "sd1",
            "studio_method": spec.method,
            "studio_train_text_encoder": str(spec.train_text_encoder).lower(),
            "studio_instance_token": spec.instance_token,
        }
        if self.token_embeddings:  # the tokens whose input embeddings the file changes
            fields["studio_token_embeddings"] = " ".join(self.tokenizer.convert_ids_to_tokens(self.token_ids))
        return fields

    def _stop(self, *, interrupted: bool) -> TrainingResult:
        """The end (or a cancel): the last samples if due, a checkpoint, and the result."""
        checkpoint = self.checkpoint()
        self.on_checkpoint(checkpoint)
        model_dir = self._save_model() if self.full else ""
        return TrainingResult(lora=checkpoint.lora, steps_done=self.step, interrupted=interrupted,
                              losses=tuple(self.losses), model_dir=model_dir,
                              seconds=time.monotonic() - self.started)

    def _save_model(self) -> str:
        """A full fine-tune's model: the base folder with the trained UNet (and text encoder)."""
        base = Path(self.spec.base_model_path)
        out = Path(tempfile.mkdtemp(prefix="studio-finetune-", dir=self.work_dir))
        replaced = {"unet"} | ({"text_encoder"} if self.spec.train_text_encoder else set())
        for item in base.iterdir():
            if item.name in replaced or item.name in ("studio_hash.json", "train_log.json"):
                continue
            if item.is_dir():
                shutil.copytree(item, out / item.name)
            else:
                shutil.copy2(item, out / item.name)
        with quiet_progress():
            self.unet.save_pretrained(out / "unet", safe_serialization=True)
            if self.spec.train_text_encoder:
                self.text_encoder.save_pretrained(out / "text_encoder")
        return str(out)


__all__ = ["Trainer", "read_state", "spec_fingerprint", "training_dtype", "load_image"]
