"""Prompt-following quality of the studio-tiny demo model, scored by the judge.

    python benchmarks/demo_model_quality.py [--model DIR] [--prompts 200] [--seeds 2]

Held-out prompts: scenes drawn with a benchmark-only seed, captioned canonically,
keeping only captions that never occur among the model's training captions
(rebuilt from the seeds and image counts in its train_log.json). Every image is
scored by ``generation.engine.training.judge`` (trained only on renders).

Reports accuracy of colour, shape, position, background and two-object
prompts; the effect of the guidance scale; the effect of the negative prompt
"red" on how often red appears; the judge's own accuracy on fresh renders;
and 20-step latency. Writes a JSON report and a captioned picture grid.
No Django.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from generation.engine.training import dataset, judge  # noqa: E402
from generation.engine.training.dataset import Scene  # noqa: E402

DEFAULT_MODEL = ROOT / "generation/engine/weights/studio-tiny"
BENCH_SEED = 20261126
METRICS = ("colour", "shape", "position", "background", "two_object")


def training_captions(model: Path) -> set[str]:
    """Canonical captions of every training scene (objects, sizes, positions, background).

    A benchmark prompt is held out when no training scene had the same content at all,
    whatever its phrasing."""
    log = json.loads((model / "train_log.json").read_text())
    runs = [log.get("init_from_log"), log]
    caps: set[str] = set()
    for run in runs:
        if not run:
            continue
        a = run["args"]
        for i in range(a["images"]):
            s = dataset.scene_for_index(a["seed"], i)
            caps.add(dataset.canonical_caption(s.objects, s.background))
    return caps


def held_out_scenes(n: int, exclude: set[str], two_object_share: float = 0.35) -> list[Scene]:
    """``n`` held-out scenes, the same share of two-object scenes as in training (35%)."""
    rng = random.Random(BENCH_SEED)
    quota = {2: round(n * two_object_share)}
    quota[1] = n - quota[2]
    out, seen = [], set()
    while len(out) < n:
        s = dataset.sample_scene(rng)
        # The benchmark always names the background.
        cap = dataset.canonical_caption(s.objects, s.background)
        if cap in exclude or cap in seen or quota[len(s.objects)] == 0:
            continue
        seen.add(cap)
        quota[len(s.objects)] -= 1
        out.append(Scene(s.objects, s.background, cap, True))
    return out


def load_pipeline(model: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], *, guidance: float, steps: int,
             negative: str | None = None, batch: int = 8) -> list[Image.Image]:
    images = []
    for a in range(0, len(prompts), batch):
        ps, ss = prompts[a:a + batch], seeds[a:a + batch]
        gens = [torch.Generator().manual_seed(s) for s in ss]
        neg = None if negative is None else [negative] * len(ps)
        images += pipe(ps, negative_prompt=neg, generator=gens, num_inference_steps=steps,
                       guidance_scale=guidance).images
    return images


def tally(images, scenes) -> dict:
    """Accuracy per attribute over all prompts, and split by one- and two-object prompts."""
    groups = {"all": lambda sc: True, "one_object": lambda sc: len(sc.objects) == 1,
              "two_objects": lambda sc: len(sc.objects) == 2}
    res = {g: {k: [] for k in METRICS} for g in groups}
    mean_ok = []
    for img, sc in zip(images, scenes):
        v = judge.score(img, sc)
        for g, pick in groups.items():
            if pick(sc):
                for k in METRICS:
                    if v[k] is not None:
                        res[g][k].append(bool(v[k]))
        mean_ok.append(float(np.mean([float(x) for x in v.values() if x is not None])))
    out: dict = {}
    for g in groups:
        out[g] = {k: (round(float(np.mean(v)), 4) if v else None) for k, v in res[g].items()}
        out[g]["n_images"] = max(len(v) for v in res[g].values())
    out["mean_attribute_accuracy"] = round(float(np.mean(mean_ok)), 4)
    return out


TARGETS = {"colour": 0.90, "shape": 0.80, "position": 0.80, "background": 0.90}


def summary_table(report: dict) -> str:
    """The headline numbers as a Markdown table."""
    main, ceiling = report["main"], report["judge_on_vae_round_trip"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    lines = ["| attribute | all prompts | one-object | two-object | VAE ceiling | target |",
             "|---|---|---|---|---|---|"]
    for k in METRICS:
        target = f">= {100 * TARGETS[k]:.0f}%" if k in TARGETS else "-"
        lines.append(f"| {k} | {pct(main['all'][k])} | {pct(main['one_object'][k])} | "
                     f"{pct(main['two_objects'][k])} | {pct(ceiling.get(k))} | {target} |")
    lines.append("")
    lines.append("| guidance | mean attribute accuracy | one-object shape | two-object colour | two-object all right |")
    lines.append("|---|---|---|---|---|")
    for g, r in sorted(report["guidance_effect"].items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {float(g):g} | {pct(r['mean_attribute_accuracy'])} | {pct(r['one_object']['shape'])} | "
                     f"{pct(r['two_objects']['colour'])} | {pct(r['two_objects']['two_object'])} |")
    neg = report["negative_prompt_red"]
    lines.append("")
    lines.append(f"red in {pct(neg['red_rate_without'])} of {neg['images']} images without a negative prompt, "
                 f"{pct(neg['red_rate_with_negative_red'])} with the negative prompt \"red\"; "
                 f"20 steps in {report['latency_s']['median']:.2f} s")
    return "\n".join(lines)


def vae_round_trip(vae):
    """image -> VAE encode (posterior mean) -> decode -> image."""
    def round_trip(image):
        x = torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        return Image.fromarray(((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    return round_trip


def red_rate(images) -> float:
    hits = 0
    for img in images:
        j = judge.judge(img)
        hits += j.background == "red" or any(o.colour == "red" for o in j.objects)
    return hits / len(images)


def caption_grid(images, captions, path: Path, cols: int = 8) -> None:
    w = h = dataset.SIZE
    cap_h = 44
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * (w + 4), rows * (h + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=10)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (img, cap) in enumerate(zip(images, captions)):
        x, y = (i % cols) * (w + 4), (i // cols) * (h + cap_h)
        grid.paste(img.resize((w, h)), (x, y))
        lines, line = [], ""
        for word in cap.split():
            if draw.textlength(line + " " + word, font=font) > w and line:
                lines.append(line)
                line = word
            else:
                line = (line + " " + word).strip()
        lines.append(line)
        for k, text in enumerate(lines[:4]):
            draw.text((x + 1, y + h + 1 + 10 * k), text, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None,
                   help="default: the model's suggested guidance (studio_model.json), else 5")
    p.add_argument("--compare-guidance", type=float, nargs="*", default=[1.0, 5.0, 9.0],
                   help="guidance scales compared with --guidance on the first --subset prompts")
    p.add_argument("--subset", type=int, default=100)
    p.add_argument("--negative-prompts", type=int, default=40)
    p.add_argument("--judge-renders", type=int, default=500)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--grid", type=Path, default=ROOT / "docs/images/demo-model-grid.png")
    p.add_argument("--json", type=Path, default=None, help="write the report here too")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.guidance is None:
        studio = json.loads((args.model / "studio_model.json").read_text())
        args.guidance = float(studio.get("default_guidance_scale", 5.0))
    t0 = time.time()
    report: dict = {"model": str(args.model), "steps": args.steps, "guidance": args.guidance}

    report["judge_on_renders"] = judge.accuracy_on_renders(args.judge_renders)
    print("judge accuracy on fresh renders:", report["judge_on_renders"], flush=True)

    scenes = held_out_scenes(args.prompts, training_captions(args.model))
    pipe = load_pipeline(args.model)

    # the ceiling: the judge on renders after a round trip through the model's VAE
    report["judge_on_vae_round_trip"] = judge.accuracy_on_renders(args.judge_renders, transform=vae_round_trip(pipe.vae))
    print("judge accuracy on VAE round trips of fresh renders:", report["judge_on_vae_round_trip"], flush=True)

    # latency: 20 steps at native resolution, batch 1, CFG on
    g = torch.Generator().manual_seed(0)
    pipe("a red circle", num_inference_steps=args.steps, generator=g)  # warm-up
    lat = []
    for s in range(3):
        t = time.perf_counter()
        pipe("a small red star in the top left on a blue background", num_inference_steps=args.steps,
             generator=torch.Generator().manual_seed(s), guidance_scale=args.guidance)
        lat.append(time.perf_counter() - t)
    report["latency_s"] = {"median": float(np.median(lat)), "all": lat, "threads": torch.get_num_threads()}
    print("latency", report["latency_s"], flush=True)

    prompts = [s.caption for s in scenes for _ in range(args.seeds)]
    seeds = [k for _ in scenes for k in range(args.seeds)]
    scene_rep = [s for s in scenes for _ in range(args.seeds)]
    images = generate(pipe, prompts, seeds, guidance=args.guidance, steps=args.steps)
    report["main"] = tally(images, scene_rep)
    report["main"]["prompts"], report["main"]["seeds"] = len(scenes), args.seeds
    report["main"]["two_object_prompts"] = sum(len(s.objects) == 2 for s in scenes)
    print("main", report["main"], flush=True)

    sub = args.subset * args.seeds
    report["guidance_effect"] = {str(args.guidance): tally(images[:sub], scene_rep[:sub])}
    for gs in args.compare_guidance:
        imgs = generate(pipe, prompts[:sub], seeds[:sub], guidance=gs, steps=args.steps)
        report["guidance_effect"][str(gs)] = tally(imgs, scene_rep[:sub])
        print("guidance", gs, report["guidance_effect"][str(gs)], flush=True)

    # negative prompt: colour-free prompts, so the model picks colours itself
    rng = random.Random(BENCH_SEED + 1)
    neg_prompts = []
    for _ in range(args.negative_prompts):
        shape, pos = rng.choice(dataset.SHAPES), rng.choice(list(dataset.POSITIONS))
        neg_prompts.append(f"a {shape} {dataset._POSITION_PHRASES[pos][0]}")
    np_prompts = [q for q in neg_prompts for _ in range(3)]
    np_seeds = [k for _ in neg_prompts for k in range(3)]
    base = generate(pipe, np_prompts, np_seeds, guidance=args.guidance, steps=args.steps, negative="")
    negd = generate(pipe, np_prompts, np_seeds, guidance=args.guidance, steps=args.steps, negative="red")
    report["negative_prompt_red"] = {"images": len(np_prompts), "red_rate_without": red_rate(base),
                                     "red_rate_with_negative_red": red_rate(negd)}
    print("negative", report["negative_prompt_red"], flush=True)

    # picture grid: 16 held-out prompts x 2 seeds (seed 0 row, then seed 1 row, per 8 prompts)
    cells, caps = [], []
    n_grid = min(16, len(scenes)) // 8 * 8 or len(scenes)
    for block in range(max(1, n_grid // 8)):
        for seed in range(args.seeds):
            for i in range(block * 8, min(block * 8 + 8, len(scenes))):
                idx = i * args.seeds + seed
                cells.append(images[idx])
                caps.append(f"{scenes[i].caption} (seed {seed})")
    caption_grid(cells, caps, args.grid)
    report["grid"] = str(args.grid)
    report["seconds"] = time.time() - t0
    text = json.dumps(report, indent=1)
    print(text)
    print(summary_table(report))
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
