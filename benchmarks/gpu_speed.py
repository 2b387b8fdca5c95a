"""Issue 13's GPU measurements in one call: random-weight SD 1.5 and SDXL built from the shipped
configs, no download.

    python benchmarks/gpu_speed.py --json $OUT/gpu_speed.json          # on a GPU (fp16)
    python benchmarks/gpu_speed.py --tiny --device cpu                 # the same code on tiny models

Rows (medians of --runs after a warm-up; it/s = denoising steps / the whole generation's wall time,
decode included, for both sides):
  (a) our Engine's it/s / plain diffusers (fp16, SDPA, no callbacks) it/s    target >= 1.0
  (a') the same with STUDIO_TORCH_COMPILE=reduce-overhead (after warm_up)    target >= 1.3
  (b) 8 users' one-image jobs as one batch / one after another, images/s     target >= 2.0,
      and each job's latency in the batch / its solo latency                 target <= 2.0
  (c) engine time with previews on / off                                     target <= 1.03
Prints the card, torch, diffusers and CUDA versions and the raw numbers; --json writes them too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

PROMPTS = ["a red circle on a blue background", "a small yellow star in the top left", "a green square",
           "a white triangle on black", "a purple heart at the bottom", "an orange cross on gray",
           "a pink ring on the right", "a blue moon on a yellow background"]


def build(family: str, tiny: bool, folder: Path, dtype) -> Path:
    """A random-weight pipeline of `family` from the shipped configs (shrunk with --tiny), saved as
    a diffusers folder the Engine loads."""
    from generation.engine import checkpoints, clip_tokenizer
    from tests.engine.test_single_file import build_tiny_pipeline, write_tiny_configs

    configs = write_tiny_configs(family, folder / "configs") if tiny else checkpoints.CONFIGS / family
    tokenizers = clip_tokenizer.tokenizer_folder()
    pipe = build_tiny_pipeline(family, configs, tokenizers).to(dtype=dtype)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"


def timed(function, runs: int) -> float:
    function()  # warm-up (CUDA kernels, allocator, compile caches)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_pipeline(path: Path, family: str, device: str, dtype):
    import diffusers
    from diffusers.models.attention_processor import AttnProcessor2_0

    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    kwargs = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(path, torch_dtype=dtype, local_files_only=True, **kwargs).to(device)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure(path: Path, family: str, size: int, steps: int, runs: int, device: str, dtype, compile_too: bool) -> dict:
    import torch

    from generation.engine import Engine, GenerationRequest
    from generation.engine.speed import SpeedOptions

    plain = plain_pipeline(path, family, device, dtype)

    def plain_one():
        plain(PROMPTS[0], height=size, width=size, num_inference_steps=steps, guidance_scale=7.0,
              generator=torch.Generator("cpu").manual_seed(1))

    plain_s = timed(plain_one, runs)
    del plain
    engine = Engine(path, device=device, dtype=dtype)
    request = GenerationRequest(prompt=PROMPTS[0], width=size, height=size, steps=steps, guidance_scale=7.0,
                                sampler="euler", seed=1)
    engine_s = timed(lambda: engine.generate(request, previews=False), runs)
    previews_s = timed(lambda: engine.generate(request, previews=True, on_step=lambda update: None), runs)
    requests = [GenerationRequest(prompt=p, width=size, height=size, steps=steps, guidance_scale=7.0,
                                  sampler="euler", seed=10 + i) for i, p in enumerate(PROMPTS)]
    sequential_s = timed(lambda: [engine.generate(r, previews=True, on_step=lambda u: None) for r in requests],
                         max(1, runs // 2))
    batch_s = timed(lambda: engine.generate_batch(requests, on_step=[lambda u: None] * len(requests)),
                    max(1, runs // 2))
    row = {
        "size": size, "steps": steps, "plain_s": plain_s, "engine_s": engine_s, "previews_s": previews_s,
        "a_engine_over_plain_its": plain_s / engine_s, "c_previews_on_over_off": previews_s / engine_s,
        "solo_s": previews_s, "sequential_8_s": sequential_s, "batch_8_s": batch_s,
        "b_batched_over_sequential_images_per_s": sequential_s / batch_s,
        "b_batch_latency_over_solo": batch_s / previews_s,
    }
    if compile_too:
        engine.release()
        compiled = Engine(path, device=device, dtype=dtype, speed=SpeedOptions(
            compile_mode="reduce-overhead" if device.startswith("cuda") else "default",
            compile_backend="inductor" if device.startswith("cuda") else "eager"))
        row["compile_warm_up_s"] = compiled.warm_up()
        row["compiled_s"] = timed(lambda: compiled.generate(request, previews=False), runs)
        row["a2_compiled_over_plain_its"] = plain_s / row["compiled_s"]
    return row


def versions() -> dict:
    import diffusers
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrunk configs: check the script on a CPU")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-sdxl", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    folder = Path(tempfile.mkdtemp(prefix="gpu-speed-"))
    report = {"versions": versions(), "device": args.device, "dtype": str(dtype), "tiny": args.tiny, "rows": []}
    sd15 = build("sd15", args.tiny, folder / "sd15", dtype)
    small, large = (64, 128) if args.tiny else (512, 1024)
    for size in (small, large):
        report["rows"].append({"model": "sd15", **measure(sd15, "sd15", size, args.steps, args.runs, args.device,
                                                          dtype, compile_too=not args.no_compile and size == small)})
    if not args.no_sdxl:
        sdxl = build("sdxl", args.tiny, folder / "sdxl", dtype)
        report["rows"].append({"model": "sdxl", **measure(sdxl, "sdxl", large, args.steps, args.runs, args.device,
                                                          dtype, compile_too=False)})
    print(json.dumps(report["versions"]))
    for row in report["rows"]:
        print(" | ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in row.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
