"""LoRAs in the engine: a job's time with one LoRA and without, and the cost of switching LoRAs
between jobs, side by side in one run.

    python benchmarks/lora_speed.py [--model PATH] [--rank 8] [--steps 20] [--size 128] [--reps 5]

Two random kohya LoRAs (A, B) of --rank cover what sd-scripts trains by default: every linear
layer of the UNet's transformer blocks (attention, feed-forward, proj_in/out) and of the text
encoder's attention and MLP. Our engine (lora.LoraSet) fuses a job's LoRAs into the weights and
copies the pristine weights back when the next job wants others. For comparison, diffusers' own
route on a second engine: load_lora_weights + set_adapters (unfused PEFT layers), UNet part only
(diffusers 0.42 cannot load the text encoder part of a kohya file with transformers 5 / PEFT 0.21).

Each row times Engine.generate() (engine_seconds: LoRA switching, denoising, VAE decode, PNG) after
putting the engine in a stated "before" state, untimed; the rows are interleaved within each
repeat so a drifting load hurts every row alike. Medians, and min-max. Torch threads pinned to 1.
Targets (docs/fine-tuning.md): one LoRA / none <= 1.10; switching < 200 ms on the demo model.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "generation" / "engine" / "weights" / "studio-tiny"

UNET_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
               "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
TEXT_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "mlp.fc1", "mlp.fc2")


def random_lora(model_path, rank: int, seed: int, *, text_encoder=True) -> bytes:
    import torch

    from generation.engine.lora_format import kohya_from_peft, model_modules

    generator = torch.Generator().manual_seed(seed)
    modules = model_modules(model_path)

    def state(component, layers):
        result = {}
        for name, shape in modules[component].items():
            if name.endswith(layers) and len(shape) in (2, 4):
                result[f"{name}.lora_A.weight"] = torch.randn(rank, *shape[1:], generator=generator) * 0.05
                result[f"{name}.lora_B.weight"] = torch.randn(shape[0], rank, *[1] * (len(shape) - 2),
                                                              generator=generator) * 0.05
        return result

    te = state("text_encoder", TEXT_LAYERS) if text_encoder else {}
    return kohya_from_peft(state("unet", UNET_LAYERS), te, alpha=rank / 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-diffusers", action="store_true", help="leave out diffusers' PEFT route")
    args = parser.parse_args(argv)

    import torch

    from generation.engine import Engine, GenerationRequest
    from generation.engine.contracts import LoraRef

    engine = Engine(args.model, device=args.device, threads=args.threads)
    folder = Path(tempfile.mkdtemp(prefix="lora-speed-"))
    refs = {}
    for name, seed, te in (("A", 1, True), ("B", 2, True), ("A-unet", 1, False), ("B-unet", 2, False)):
        data = random_lora(args.model, args.rank, seed, text_encoder=te)
        path = folder / f"{name}.safetensors"
        path.write_bytes(data)
        refs[name] = LoraRef(name=name, sha256=hashlib.sha256(data).hexdigest(), path=str(path))
    size_kb = Path(refs["A"].path).stat().st_size / 1024
    request = GenerationRequest(prompt="a red circle on a blue background", width=args.size,
                                height=args.size, steps=args.steps, guidance_scale=3.0, sampler="euler",
                                seed=1)
    cpu: dict[str, list[float]] = {}

    def job(target, loras=(), label=None):
        """Wall seconds of one job (engine_seconds); its CPU seconds go to cpu[label]."""
        from dataclasses import replace

        started = time.process_time()
        seconds = target.generate(replace(request, loras=tuple(loras)), previews=False).engine_seconds
        if label:
            cpu.setdefault(label, []).append(time.process_time() - started)
        return seconds

    job(engine, [refs["A"]])  # warm up, fill the cache with A and B
    job(engine, [refs["B"]])

    rows: dict[str, list[float]] = {}
    ours = [
        ("none (before: none)", (), ()),
        ("A (before: A) — same LoRA as the last job", (refs["A"],), (refs["A"],)),
        ("A (before: B) — switch", (refs["B"],), (refs["A"],)),
        ("A (before: none)", (), (refs["A"],)),
        ("none (before: A)", (refs["A"],), ()),
        ("A-unet (before: A-unet)", (refs["A-unet"],), (refs["A-unet"],)),
    ]
    switches: dict[str, list[float]] = {
        "use(A) after use(B)": [], "use([]) after use(A)": [], "use(A) after use([])": [],
        "first load of a LoRA file (cache miss)": []}

    other = None
    if not args.skip_diffusers:
        other = Engine(args.model, device=args.device)
        other.pipe.load_lora_weights(refs["A-unet"].path, adapter_name="a")
        other.pipe.load_lora_weights(refs["B-unet"].path, adapter_name="b")
        switches |= {"diffusers set_adapters(a) after (b)": [], "diffusers disable_lora()": []}

    def diffusers_state(adapter):
        if adapter:
            other.pipe.enable_lora()
            other.pipe.set_adapters([adapter], [1.0])
        else:
            other.pipe.disable_lora()

    for _ in range(args.reps):
        for label, before, loras in ours:
            engine.loras.use(before)
            rows.setdefault(f"ours: {label}", []).append(job(engine, loras, f"ours: {label}"))
        if other is not None:
            for label, adapter in (("diffusers PEFT: A-unet (unfused)", "a"),
                                   ("diffusers PEFT: none (LoRA layers disabled)", None)):
                diffusers_state(adapter)
                rows.setdefault(label, []).append(job(other, (), label))
            diffusers_state("b")
            started = time.perf_counter()
            diffusers_state("a")
            switches["diffusers set_adapters(a) after (b)"].append(time.perf_counter() - started)
            started = time.perf_counter()
            diffusers_state(None)
            switches["diffusers disable_lora()"].append(time.perf_counter() - started)
        for label, before, after in (("use(A) after use(B)", [refs["B"]], [refs["A"]]),
                                     ("use([]) after use(A)", [refs["A"]], []),
                                     ("use(A) after use([])", [], [refs["A"]])):
            engine.loras.use(before)
            started = time.perf_counter()
            engine.loras.use(after)
            switches[label].append(time.perf_counter() - started)
        engine.loras.use([])
        engine.loras._cache.clear()
        started = time.perf_counter()
        engine.loras.load(refs["A"])
        switches["first load of a LoRA file (cache miss)"].append(time.perf_counter() - started)
        engine.loras.load(refs["B"])

    a_modules = len(engine.loras.load(refs["A"]).modules)
    print(f"model {engine.info.name} on {engine.device} ({engine.dtype}), torch threads "
          f"{torch.get_num_threads()}, {args.size}x{args.size}, {args.steps} steps Euler, "
          f"{args.reps} interleaved repeats")
    print(f"LoRA A: rank {args.rank}, {a_modules} modules (UNet + text encoder), {size_kb:.0f} KiB\n")
    base = statistics.median(rows["ours: none (before: none)"])
    base_cpu = statistics.median(cpu["ours: none (before: none)"])
    print("| job | median engine s (wall) | min-max | ratio to none | median CPU s | CPU ratio to none |")
    print("|---|---|---|---|---|---|")
    for label, times in rows.items():
        med, med_cpu = statistics.median(times), statistics.median(cpu[label])
        print(f"| {label} | {med:.3f} | {min(times):.3f}-{max(times):.3f} | {med / base:.3f} | "
              f"{med_cpu:.3f} | {med_cpu / base_cpu:.3f} |")
    print("\nWall time on a shared CPU is noisy; CPU time (this process, 1 thread) is the steadier ratio.")
    print("\n| switch alone | median ms | min-max ms |")
    print("|---|---|---|")
    for label, times in switches.items():
        ms = [t * 1000 for t in times]
        print(f"| {label} | {statistics.median(ms):.1f} | {min(ms):.1f}-{max(ms):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
