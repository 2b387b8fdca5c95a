"""The Engine: one StableDiffusionPipeline loaded once and kept warm, driven by plain requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)

from .checkpoints import load_pipeline as load_single_file
from .contracts import (
    MASKED_CONTENT,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelError,
    ModelInfo,
    StepUpdate,
    validate_request,
)
from .infotext import LORA_HASHES_KEY, format_infotext, format_lora_hashes
from .inpainting import Canvas, prepare_canvas
from .loading import dtype_kwarg, quiet_progress
from .lora import LoraSet
from .model_info import read_model_info
from .pngmeta import encode_png
from .previews import (
    PREVIEW_MIME,
    DecoderPreviewer,
    DenoisedTracker,
    LinearPreviewer,
    TaesdPreviewer,
    encode_frame,
    grid,
)
from .prompt_tags import strip_lora_tags
from .samplers import make_scheduler
from .speed import SpeedOptions, apply_speed_options

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, str):
        try:
            return _DTYPES[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(_DTYPES)}") from None
    return dtype


def set_torch_threads(threads: int | None) -> None:
    """Size torch's CPU thread pools for this process; None or 0 leaves torch's default (all cores).

    Process-wide, so the worker calls it once, at engine load. On a CPU shared with other busy
    processes, more threads than free cores make torch's threads spin and wait on each other
    (see docs/benchmarks.md: 20 steps of studio-tiny, 1 vs 2 threads on 2 busy cores).
    """
    if not threads:
        return
    if threads < 0:
        raise ValueError(f"threads must be 0 (torch's default) or more, not {threads}")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # settable once per process, before any inter-op work; the intra-op pool is what counts


def load_sd_pipeline(model_path: str | Path, dtype, family: str = "sd1") -> StableDiffusionPipeline:
    """A diffusers folder, or a single .safetensors checkpoint (checkpoints.py), loaded offline; an
    SDXL one (`family`) as a StableDiffusionXLPipeline."""
    if Path(model_path).is_file():
        return load_single_file(model_path, dtype=dtype)  # CheckpointError is a ModelError
    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                         "requires_safety_checker": False}
    try:
        with quiet_progress():
            return pipeline_class.from_pretrained(
                model_path,
                local_files_only=True,
                **extra,
                **dtype_kwarg(dtype),
            )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {model_path}: {exc}") from exc


class Engine:
    """Loads an SD 1.x/2.x or SDXL model (a diffusers folder or a .safetensors file) once;
    generate() runs one request at a time, generate_batch() several compatible ones together.

    Not for concurrent use from several threads: calls are serialised by a lock (one GPU, one job).
    ``threads`` sizes torch's CPU thread pools first (see set_torch_threads; None: left alone).
    """

    def __init__(self, model_path: str | Path, device: str | None = None, dtype=None,
                 taesd_path: str | None = None, threads: int | None = None, speed: SpeedOptions | None = None):
        set_torch_threads(threads)
        self.threads = torch.get_num_threads()
        self.info: ModelInfo = read_model_info(model_path)
        self.sdxl = self.info.family == "sdxl"  # two text encoders, pooled embeddings, size conditioning
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        pipe = load_sd_pipeline(model_path, self.dtype, self.info.family)
        pipe.to(self.device)
        if pipe.vae.config.get("force_upcast") and self.dtype == torch.float16:
            pipe.vae.to(torch.float32)  # SDXL's VAE overflows in float16 (as diffusers' upcast_vae)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        # request.loras are fused into these (shared by the img2img/inpaint pipelines) per request.
        self.loras = LoraSet({"unet": pipe.unet, "text_encoder": pipe.text_encoder}, model_path=model_path,
                             device=self.device)
        # After the LoraSet took the plain UNet: a compiled one wraps the same weights (speed.py).
        self.speed = speed or SpeedOptions()
        self.speed_applied = apply_speed_options(pipe, self.device, self.speed)
        self._base_scheduler_config = pipe.scheduler.config
        self._lock = threading.Lock()
        self._img2img = self._inpaint = None  # made on first use, sharing this pipeline's components
        # A 9-channel UNet (latents + mask + masked-image latents) is an inpainting model.
        self.inpainting_model = pipe.unet.config.in_channels == 9
        self._previewer = None
        if taesd_path:
            self._previewer = TaesdPreviewer(taesd_path, self.device, self.dtype)
            self.preview_method = "taesd"
        elif self.info.preview_decoder:
            self._previewer = DecoderPreviewer(self.info.preview_decoder, self.device)
            self.preview_method = "decoder"
        elif self.info.latent_rgb_factors is not None:
            self._previewer = LinearPreviewer(self.info.latent_rgb_factors, self.info.latent_rgb_bias,
                                              self.device)
            self.preview_method = "linear"
        else:
            self.preview_method = "none"

    def warm_up(self) -> float:
        """One small generation at the native size, so a compiled UNet compiles now, not in a
        user's job; the seconds it took."""
        started = time.perf_counter()
        info = self.info
        self.generate(GenerationRequest(prompt="warm-up", width=info.native_width, height=info.native_height,
                                        steps=2, guidance_scale=info.default_guidance_scale, sampler="euler",
                                        seed=0), previews=True)
        return time.perf_counter() - started

    def release(self) -> None:
        """Drop the model's weights (an EnginePool evicting it); the engine is unusable afterwards."""
        with self._lock:
            self.pipe = self._img2img = self._inpaint = self._previewer = self.loras = None
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_step: Callable[[StepUpdate], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        previews: bool = True,
        preview_interval_s: float = 0.1,
    ) -> GenerationResult:
        """Run one request. Raises InvalidRequest before any work when the request is invalid.

        on_step gets a StepUpdate after every step; it carries a preview frame on the first step,
        then at most one per preview_interval_s, and always on the last step. should_cancel is
        polled after every step; when it returns true the run stops and the result is
        interrupted=True with no images. An exception raised by on_step aborts the run and propagates.

        request.loras are applied for this request alone (lora.LoraSet: a LoRA that cannot be
        loaded or does not fit the model raises InvalidRequest("lora", ...) before any step); the
        prompt's `<lora:...>` tags are not encoded (strip_lora_tags) but stay in the infotext.

        The one-request case of generate_batch (the same denoising code).
        """
        return self.generate_batch([request], on_step=[on_step], should_cancel=[should_cancel], previews=previews,
                                   preview_interval_s=preview_interval_s)[0]

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_step: Sequence[Callable[[StepUpdate], None] | None] | None = None,
        should_cancel: Sequence[Callable[[], bool] | None] | None = None,
        previews: bool = True,
        preview_interval_s: float = 0.1,
    ) -> list[GenerationResult]:
        """Run compatible requests (batch_key: text to image, same size, steps, sampler, guidance and
        LoRAs) together as one batch on the UNet; one GenerationResult per request, in order.

        Each request keeps its own prompt, negative prompt, seeds (image i: seed + i, each image its
        own generator, as generate() seeds them), previews and StepUpdates (on_step[k], its own
        frames only) and cancel (should_cancel[k], polled after every step while it is live). A
        request cancelled mid-batch is interrupted at once (its hooks are not called again) and
        its rows leave the batch for the remaining steps (_drop_rows) while the others go on; when
        every request is cancelled the run stops. A request cancelled before the start is left
        out of the batch. engine_seconds of each is its time in the engine, the batch's steps and
        its own decoding. Raises InvalidRequest for an invalid request or requests that cannot
        share a batch; an exception from a hook aborts the whole batch and propagates.
        """
        requests = list(requests)
        count = len(requests)
        if not count:
            return []
        on_step = _one_per_request(on_step, count, "on_step")
        should_cancel = _one_per_request(should_cancel, count, "should_cancel")
        for request in requests:
            validate_request(request, self.info)
        if count > 1 and len({batch_key(request) for request in requests}) > 1:
            raise InvalidRequest("batch", "requests of one batch need the same mode (text to image), size, "
                                          "steps, sampler, guidance scale and LoRAs")
        if count > 1 and requests[0].mode != "txt2img":
            raise InvalidRequest("batch", "only text to image runs in a batch")
        if count > 1 and self.inpainting_model:
            # Text to image on an inpainting model is inpainting a grey canvas (prepare_canvas), which
            # is not batched across requests: they run one after another, each as it would alone.
            return [self.generate_batch([request], on_step=[step], should_cancel=[cancel], previews=previews,
                                        preview_interval_s=preview_interval_s)[0]
                    for request, step, cancel in zip(requests, on_step, should_cancel, strict=True)]
        # Decodes and checks the source and mask before taking the lock (a bad file fails fast).
        canvas = prepare_canvas(requests[0], inpainting_model=self.inpainting_model)
        try:
            return self._run_batch(requests, canvas, on_step, should_cancel, previews, preview_interval_s)
        except torch.OutOfMemoryError:
            if count == 1:
                raise
            # Memory bounds the batch too: a batch the card cannot hold runs as two halves (and so on).
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = count // 2
            return [
                *self.generate_batch(requests[:half], on_step=on_step[:half], should_cancel=should_cancel[:half],
                                     previews=previews, preview_interval_s=preview_interval_s),
                *self.generate_batch(requests[half:], on_step=on_step[half:], should_cancel=should_cancel[half:],
                                     previews=previews, preview_interval_s=preview_interval_s),
            ]

    def _run_batch(self, requests, canvas, on_step, should_cancel, previews, preview_interval_s):
        count = len(requests)
        with self._lock:
            started = time.perf_counter()
            results = [GenerationResult(images=[], interrupted=True, engine_seconds=0.0)] * count
            batch = [k for k in range(count) if should_cancel[k] is None or not should_cancel[k]()]
            if not batch:
                return results
            self.loras.use(requests[batch[0]].loras)
            latents, cancelled_at = self._denoise(
                [requests[k] for k in batch], canvas, [on_step[k] for k in batch], [should_cancel[k] for k in batch],
                previews, preview_interval_s,
            )
            offset = 0  # the latents hold the rows of the requests that ran to the end, in order
            for k, stopped in zip(batch, cancelled_at, strict=True):
                if stopped is not None:
                    results[k] = GenerationResult(images=[], interrupted=True, engine_seconds=stopped - started)
                else:
                    rows = latents[offset : offset + requests[k].num_images]
                    offset += requests[k].num_images
                    images = self._finish(requests[k], canvas, rows)
                    results[k] = GenerationResult(images=images, interrupted=False,
                                                  engine_seconds=time.perf_counter() - started)
            return results

    # -- internals -------------------------------------------------------------------------------

    def _pipeline_for(self, request: GenerationRequest, canvas: Canvas | None):
        """The pipeline of the request's mode and its mode-specific arguments. The img2img and
        inpaint pipelines share the loaded components (diffusers' from_pipe): nothing is loaded twice."""
        if canvas is None:
            return self.pipe, {"width": request.width, "height": request.height}
        if canvas.mask is None:
            if self._img2img is None:
                pipeline_class = StableDiffusionXLImg2ImgPipeline if self.sdxl else StableDiffusionImg2ImgPipeline
                self._img2img = pipeline_class.from_pipe(self.pipe)
            return self._img2img, {"image": canvas.init, "strength": canvas.strength}
        if self._inpaint is None:
            pipeline_class = StableDiffusionXLInpaintPipeline if self.sdxl else StableDiffusionInpaintPipeline
            self._inpaint = pipeline_class.from_pipe(self.pipe)
        return self._inpaint, {"image": canvas.init, "mask_image": canvas.work_mask, "strength": canvas.strength,
                               "width": request.width, "height": request.height}

    def _embeddings(self, pipe, requests: list[GenerationRequest], guided: bool) -> dict:
        """Each request's prompt and negative prompt encoded on its own (as a lone request is),
        repeated for its images, concatenated in request order: the pipeline's embedding arguments
        (SDXL's pooled embeddings of its second text encoder too)."""
        parts: dict[str, list] = {}
        for request in requests:
            with torch.no_grad():
                encoded = pipe.encode_prompt(
                    prompt=strip_lora_tags(request.prompt), device=self.device,
                    num_images_per_prompt=request.num_images, do_classifier_free_guidance=guided,
                    negative_prompt=request.negative_prompt,
                )
            names = EMBEDDING_ARGUMENTS[: len(encoded)]
            for name, tensor in zip(names, encoded, strict=True):
                parts.setdefault(name, []).append(tensor)
        return {name: (torch.cat(tensors) if tensors[0] is not None else None) for name, tensors in parts.items()}

    def _denoise(self, requests, canvas, on_step, should_cancel, previews, preview_interval_s):
        """Denoise the requests (one batch) to latents (their rows in request order), and when each
        was cancelled (time.perf_counter(); None: it ran to the end)."""
        first = requests[0]
        pipe, mode_arguments = self._pipeline_for(first, canvas)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = make_scheduler(first.sampler, self._base_scheduler_config)
        tracker = DenoisedTracker(pipe.scheduler)
        previewer = self._previewer if previews else None
        state = {"last_frame": None}
        cancelled_at: list[float | None] = [None] * len(requests)
        rows = [range(0, 0)] * len(requests)  # each request's rows in the batch now (a cancelled one has none)
        offset = 0
        for k, request in enumerate(requests):
            rows[k] = range(offset, offset + request.num_images)
            offset += request.num_images

        def on_step_end(pipeline, i, t, callback_kwargs):
            step, total = i + 1, pipeline.num_timesteps
            frames = None
            if previewer is not None:
                now = time.monotonic()
                last = state["last_frame"]
                if step == total or last is None or now - last >= preview_interval_s:
                    source = tracker.latest()
                    if source is None:
                        source = callback_kwargs["latents"]
                    frames = previewer(source)
                    if canvas is not None:
                        frames = canvas.preview(frames)
                    state["last_frame"] = now
            for k, own in enumerate(rows):
                if cancelled_at[k] is not None:
                    continue
                if on_step[k] is not None:
                    frame = encode_frame(grid(frames[own.start : own.stop])) if frames is not None else None
                    on_step[k](StepUpdate(step=step, total_steps=total, preview_png=frame,
                                          preview_mime=PREVIEW_MIME if frame is not None else ""))
                if should_cancel[k] is not None and should_cancel[k]():
                    cancelled_at[k] = time.perf_counter()
            if all(stopped is not None for stopped in cancelled_at):
                pipeline._interrupt = True  # diffusers skips the remaining steps
                return {}
            leaving = [k for k, own in enumerate(rows) if cancelled_at[k] is not None and len(own)]
            if not leaving:
                return {}
            return self._drop_rows(pipeline, callback_kwargs, rows, leaving, generators)

        guided = first.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None  # as diffusers decides
        embeddings = self._embeddings(pipe, requests, guided)
        generators = [torch.Generator("cpu").manual_seed(request.seed + i)
                      for request in requests for i in range(request.num_images)]
        row_tensors = ["latents", *(name for name in ROW_TENSORS if name in pipe._callback_tensor_inputs)]
        out = pipe(
            **embeddings,
            **mode_arguments,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            num_images_per_prompt=1,
            generator=generators,
            output_type="latent",  # decoded below, and not at all when interrupted
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=row_tensors,
        )
        return out.images, cancelled_at

    @staticmethod
    def _drop_rows(pipeline, tensors, rows, leaving, generators) -> dict:
        """Take the rows of cancelled requests out of the batch for the remaining steps: the
        latents, the prompt embeddings (negative and positive halves under guidance), the images'
        generators (the list the scheduler draws its noise from, changed in place) and every
        per-row tensor the scheduler keeps between steps (the multistep solvers' model outputs,
        UniPC's last sample). `rows` is updated to the rows each request has afterwards."""
        latents = tensors["latents"]
        count = latents.shape[0]
        keep = [r for k, own in enumerate(rows) if k not in leaving for r in own]
        index = torch.tensor(keep, device=latents.device)

        def cut(value):
            if isinstance(value, torch.Tensor) and value.ndim == latents.ndim and value.shape[0] == count:
                return value.index_select(0, index.to(value.device))
            if isinstance(value, list) and any(isinstance(item, torch.Tensor) for item in value):
                return [cut(item) for item in value]
            return value

        scheduler = pipeline.scheduler
        for name, value in list(vars(scheduler).items()):
            cut_value = cut(value)
            if cut_value is not value:
                setattr(scheduler, name, cut_value)
        kept = {"latents": latents.index_select(0, index)}
        for name in ROW_TENSORS:  # the embeddings (SDXL: its pooled ones and size conditioning too)
            if name not in tensors:
                continue
            value = tensors[name]
            if value.shape[0] == 2 * count:  # [negative; positive] under classifier-free guidance
                value = torch.cat([value[:count].index_select(0, index.to(value.device)),
                                   value[count:].index_select(0, index.to(value.device))])
            else:
                value = value.index_select(0, index.to(value.device))
            kept[name] = value
        generators[:] = [generators[r] for r in keep]
        offset = 0
        for k, own in enumerate(rows):
            size = 0 if k in leaving else len(own)
            rows[k] = range(offset, offset + size)
            offset += size
        return kept

    def _finish(self, request: GenerationRequest, canvas: Canvas | None,
                latents: torch.Tensor) -> list[GeneratedImage]:
        pipe = self.pipe
        images = []
        if pipe.vae.config.get("force_upcast") and pipe.vae.dtype == torch.float16:
            pipe.vae.to(torch.float32)  # an SDXL image-to-image encode casts it back to float16
        for i in range(latents.shape[0]):  # one at a time: bounded VAE memory
            with torch.inference_mode():
                latent = latents[i : i + 1].to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
                decoded = pipe.vae.decode(latent).sample
            pil = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
            if canvas is not None:
                pil = canvas.finish(pil)
            seed = request.seed + i
            infotext = format_infotext(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                steps=request.steps,
                sampler=request.sampler,
                guidance_scale=request.guidance_scale,
                seed=seed,
                width=request.width,
                height=request.height,
                model_hash=self.info.hash,
                model_name=self.info.name,
                extra=canvas_infotext(request) | lora_infotext(request),
            )
            images.append(GeneratedImage(png=encode_png(pil, infotext), seed=seed, width=pil.width,
                                         height=pil.height, infotext=infotext))
        return images


def lora_infotext(request: GenerationRequest) -> dict[str, object]:
    """A1111's "Lora hashes" field (the prompt's tags say the weights)."""
    return {LORA_HASHES_KEY: format_lora_hashes(request.loras)} if request.loras else {}


def canvas_infotext(request: GenerationRequest) -> dict[str, object]:
    """The canvas's parameters as AUTOMATIC1111 writes them (nothing for text to image)."""
    if request.mode == "txt2img":
        return {}
    extra: dict[str, object] = {"Denoising strength": request.strength}
    if request.mode == "inpaint":
        extra["Mask blur"] = request.mask_blur
        extra["Masked content"] = MASKED_CONTENT[request.masked_content]
        if request.only_masked:
            extra["Inpaint area"] = "Only masked"
            extra["Only masked padding, pixels"] = request.only_masked_padding
    return extra


# What encode_prompt returns, in order (SD 1.x/2.x: the first two; SDXL: all four), as the
# pipeline's arguments.
EMBEDDING_ARGUMENTS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                       "negative_pooled_prompt_embeds")
# The per-row tensors besides the latents that a step callback may cut (Engine._drop_rows): the
# prompt embeddings, and SDXL's pooled text embeddings and size conditioning.
ROW_TENSORS = ("prompt_embeds", "add_text_embeds", "add_time_ids")


def batch_key(request: GenerationRequest) -> tuple:
    """What requests of one batch share: mode, size, steps, sampler, guidance scale and LoRAs (the
    same files at the same weights; the LoRAs are fused into the model for the whole batch)."""
    loras = tuple(sorted((lora.sha256, float(lora.weight)) for lora in request.loras))
    return (request.mode, request.width, request.height, request.steps, request.sampler,
            float(request.guidance_scale), loras)


def _one_per_request(hooks, count: int, name: str) -> list:
    if hooks is None:
        return [None] * count
    hooks = list(hooks)
    if len(hooks) != count:
        raise ValueError(f"{name}: {len(hooks)} hooks for {count} requests")
    return hooks
