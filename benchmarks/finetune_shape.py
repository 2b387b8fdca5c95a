"""Teach the studio-tiny demo model a shape it never saw, with LoRA and with DreamBooth.

    python benchmarks/finetune_shape.py [--shape crescent] [--images 20] [--preset standard]
                                        [--methods lora dreambooth] [--threads 2]

The renderer draws the new shape (``dataset.NEW_SHAPES``); ``--images`` training scenes are
captioned with a rare token in place of the shape word ("a red zwx on the left on a black
background"). Held-out prompts use object colours, backgrounds and positions that no training
scene had (``dataset.NEW_SHAPE_TEST_SPLIT``), with seeds the training never used. Every image is
judged by the extended judge (``judge.judge(..., extended=True)``, trained on renders only).

Measured, in one run, on the same prompts and seeds:
* the new shape's rate for the token prompts before training (the base model) and after each
  training (held-out prompts x seeds);
* old-shape accuracy: one-object held-out prompts of the shipped shapes
  (``demo_model_quality.held_out_scenes``), before and after each training, by the standard judge
  and by the extended one (which also catches an old prompt drawn as the new shape);
* the wall time of each training (torch threads pinned; the machine may be shared).

Trains with ``generation.engine.training.finetune.Trainer`` (the studio's trainer, as the worker
runs it) and generates with the Engine and a ``LoraRef`` (as a job with that LoRA would). No Django.

DreamBooth's variants (docs/fine-tuning.md, runs C1-C5 and D1-D32): a prior over every old shape
(``--old-shape-class-prompts K``, optionally ``--class-prompt-shapes`` / ``--class-prompts-train-split``),
``--train-text-encoder``, ``--train-token-embeddings`` (TrainingSpec), and the trainer's module
knobs ``--token-lr-scale``, ``--adapter-lr-scale``, ``--prior-warmup``, ``--lr-schedule``; ``--seed``.
Runs E-G: ``--lora-targets all``, ``--class-prompts-by-size``, ``--prior-weight``, ``--class-noun``;
``--methods dreambooth-full`` trains DreamBooth as a full UNet fine-tune (not measured yet).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation.engine.contracts import GenerationRequest, LoraRef  # noqa: E402
from generation.engine.training import dataset, judge  # noqa: E402
from generation.engine.training.spec import PRESETS, TrainingImage, TrainingSpec  # noqa: E402

DEFAULT_MODEL = ROOT / "generation/engine/weights/studio-tiny"
TOKEN = "zwx"
STEPS, GUIDANCE = 20, 3.0  # the model's suggested generation settings


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def old_shape_scenes(model: Path, n: int) -> list[dataset.Scene]:
    """``n`` one-object held-out prompts of the shipped shapes (the quality benchmark's)."""
    from demo_model_quality import held_out_scenes, training_captions

    scenes = held_out_scenes(3 * n, training_captions(model))
    return [s for s in scenes if len(s.objects) == 1][:n]


# ----------------------------------------------------------------------------- generating


class Generator:
    """Images for (prompt, seed) pairs through the Engine, with or without one LoRA (a LoraRef,
    applied per request on the warm pipeline as a job would)."""

    def __init__(self, model: Path, threads: int):
        from generation.engine.engine import Engine

        self.engine = Engine(model, device="cpu", threads=threads)
        self.seconds = 0.0

    def images(self, prompts: list[str], seeds: list[int], lora: LoraRef | None = None) -> list:
        from PIL import Image

        out = []
        t0 = time.perf_counter()
        for p, s in zip(prompts, seeds):
            req = GenerationRequest(prompt=p, width=dataset.SIZE, height=dataset.SIZE, steps=STEPS,
                                    guidance_scale=GUIDANCE, sampler="euler", seed=s,
                                    loras=(lora,) if lora is not None else ())
            res = self.engine.generate(req, previews=False)
            out.append(Image.open(io.BytesIO(res.images[0].png)).convert("RGB"))
        self.seconds += time.perf_counter() - t0
        return out


def new_shape_rate(images, scenes, shape: str) -> dict:
    hits = colour = 0
    for img, sc in zip(images, scenes):
        j = judge.judge(img, extended=True)
        det = j.find(sc.objects[0].colour)
        hits += det is not None and det.shape == shape
        colour += bool(j.objects) and j.objects[0].colour == sc.objects[0].colour
    return {"rate": hits / len(scenes), "colour": colour / len(scenes), "n": len(scenes)}


def old_shape_accuracy(images, scenes) -> dict:
    std = [bool(judge.score(img, sc)["shape"]) for img, sc in zip(images, scenes)]
    ext = [bool(judge.score(img, sc, extended=True)["shape"]) for img, sc in zip(images, scenes)]
    return {"standard": float(np.mean(std)), "extended": float(np.mean(ext)), "n": len(scenes)}


# ----------------------------------------------------------------------------- training


def regularisation_images(gen: "Generator", n: int) -> tuple[TrainingImage, ...]:
    """``n`` of the base model's own images of old one-object shape prompts (training-set scenes,
    canonical captions, seeds 10000+), as extra training images with their captions: a prior over
    every old shape, given through the images (the trainer's class prompt is one string)."""
    rng = random.Random(4711)
    caps: list[str] = []
    while len(caps) < n:
        s = dataset.sample_scene(rng, two_object_rate=0.0)
        caps.append(dataset.canonical_caption(s.objects, s.background))
    imgs = gen.images(caps, list(range(10_000, 10_000 + n)))
    return tuple(TrainingImage(png(i), c) for i, c in zip(imgs, caps))


def make_spec(args, method: str, scenes, extra: tuple[TrainingImage, ...] = ()) -> TrainingSpec:
    preset = PRESETS[args.preset]
    images = tuple(TrainingImage(png(dataset.render(s)), s.caption) for s in scenes) + extra
    full = method == "dreambooth-full"
    method = "dreambooth" if full else method
    spec = TrainingSpec(
        base_model_path=str(args.model), images=images, method=method, full_finetune=full,
        steps=args.steps or preset["steps"], rank=args.rank or preset["rank"],
        learning_rate=args.lr or preset["learning_rate"], resolution=dataset.SIZE,
        batch_size=args.batch, seed=args.seed, checkpoint_every=0, sample_every=0,
        train_text_encoder=args.train_text_encoder, lora_targets=args.lora_targets,
    )
    if method == "dreambooth":
        spec = replace(spec, instance_token=TOKEN, instance_prompt=f"a {shape_words(args)}",
                       class_prompt=args.class_prompt, class_prompts=class_prompts(args),
                       prior_preservation=True,
                       num_class_images=args.class_images, prior_loss_weight=args.prior_weight,
                       train_token_embeddings=True if args.train_token_embeddings and not full else None)
    return spec


def shape_words(args) -> str:
    """What stands for the shape word in the new shape's captions and prompts: the rare token, or
    with ``--class-noun`` the token before a known shape word ("zwx circle"), as DreamBooth's
    "a photo of sks dog" puts its identifier before the class noun."""
    return f"{TOKEN} {args.class_noun}" if args.class_noun else TOKEN


def class_prompts(args) -> tuple[str, ...]:
    """DreamBooth's class prompts: ``--class-prompts`` as given, or with ``--old-shape-class-prompts
    K`` K canonical one-object captions per shipped shape (colours, backgrounds and positions drawn
    from the training distribution, seeded), so the prior covers every old shape."""
    if args.class_prompts:
        return tuple(args.class_prompts)
    if not args.old_shape_class_prompts:
        return ()
    rng = random.Random(9001)
    split = dataset.NEW_SHAPE_TRAIN_SPLIT
    out: list[str] = []
    sizes = ("small", "medium", "large")
    for shape in args.class_prompt_shapes or dataset.SHAPES:
        for k in range(args.old_shape_class_prompts):
            while True:
                s = dataset.sample_scene(rng, two_object_rate=0.0)
                o = s.objects[0]
                if o.shape == shape and (not args.class_prompts_by_size or o.size == sizes[k % 3]) and (
                        not args.class_prompts_train_split or (
                        o.colour in split["colours"] and s.background in split["backgrounds"]
                        and o.position in split["positions"])):
                    break
            out.append(dataset.canonical_caption(s.objects, s.background))
    return tuple(out)


def train(spec: TrainingSpec):
    """The studio's trainer, as the worker runs it: (kohya LoRA bytes, or a full fine-tune's model
    folder; seconds, losses)."""
    from generation.engine.training.finetune import Trainer

    t0 = time.perf_counter()
    result = Trainer(device="cpu").run(spec)
    return result.model_dir or result.lora, time.perf_counter() - t0, list(result.losses)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--shape", default="crescent", choices=dataset.NEW_SHAPES)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=["lora", "dreambooth"],
                   choices=["lora", "dreambooth", "dreambooth-full"],
                   help="dreambooth-full: DreamBooth as a full UNet fine-tune (a private model)")
    p.add_argument("--preset", default="standard", choices=list(PRESETS))
    p.add_argument("--steps", type=int, default=0, help="override the preset's steps")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=1, help="1: as the studio trains")
    p.add_argument("--seed", type=int, default=0, help="the training's seed (adapter init, noise, class images)")
    p.add_argument("--train-text-encoder", action="store_true")
    p.add_argument("--train-token-embeddings", action="store_true",
                   help="DreamBooth: also train the instance token's input embeddings (textual inversion)")
    p.add_argument("--token-lr-scale", type=float, default=None,
                   help="the token rows' learning rate / --lr (finetune.TOKEN_EMBEDDING_LR_SCALE)")
    p.add_argument("--adapter-lr-scale", type=float, default=None,
                   help="the LoRA adapters' learning rate / --lr (0: textual inversion alone)")
    p.add_argument("--prior-warmup", type=float, default=None,
                   help="the prior weight ramps up from 0 over this fraction of the steps (finetune.PRIOR_WARMUP)")
    p.add_argument("--lr-schedule", default=None, choices=["constant", "cosine"],
                   help="finetune.LR_SCHEDULE: constant, or cosine down to 0 at the last step")
    p.add_argument("--class-prompts-train-split", action="store_true",
                   help="--old-shape-class-prompts only in the training images' colours, backgrounds and "
                        "positions (dataset.NEW_SHAPE_TRAIN_SPLIT), none of the held-out ones")
    p.add_argument("--class-prompts-by-size", action="store_true",
                   help="--old-shape-class-prompts cycle through the sizes: K=3 gives each shape small, "
                        "medium and large")
    p.add_argument("--class-prompt-shapes", nargs="+", default=[], choices=dataset.SHAPES,
                   help="--old-shape-class-prompts for these shapes only (default: all 7)")
    p.add_argument("--class-noun", default="", choices=["", *dataset.SHAPES],
                   help="captions and prompts say 'zwx NOUN' (e.g. 'zwx circle') instead of 'zwx'")
    p.add_argument("--class-prompt", default="a circle")
    p.add_argument("--class-prompts", nargs="+", default=[],
                   help="several class prompts (instead of --class-prompt), class images spread over them")
    p.add_argument("--old-shape-class-prompts", type=int, default=0, metavar="K",
                   help="class prompts: K canonical captions of each shipped shape (varied colours)")
    p.add_argument("--lora-targets", default="", choices=["", "attention", "cross_attention", "all"],
                   help="where the LoRA goes ('': the method's default)")
    p.add_argument("--skip-before", action="store_true",
                   help="do not generate the base model's images (deterministic: see an earlier run)")
    p.add_argument("--class-images", type=int, default=20)
    p.add_argument("--prior-weight", type=float, default=1.0)
    p.add_argument("--regularise", type=int, default=0,
                   help="add N of the base model's own old-shape images (with their captions) to the "
                        "training images of every method")
    p.add_argument("--test-prompts", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--old-prompts", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--grid", type=Path, default=None,
                   help="write a picture grid here: held-out and old-shape prompts, before and after")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from generation.engine.training import finetune

    if args.token_lr_scale is not None:
        finetune.TOKEN_EMBEDDING_LR_SCALE = args.token_lr_scale
    if args.adapter_lr_scale is not None:
        finetune.ADAPTER_LR_SCALE = args.adapter_lr_scale
    if args.prior_warmup is not None:
        finetune.PRIOR_WARMUP = args.prior_warmup
    if args.lr_schedule is not None:
        finetune.LR_SCHEDULE = args.lr_schedule
    t_start = time.time()
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    train_scenes = dataset.new_shape_training_scenes(args.shape, args.images, token=shape_words(args))
    test_scenes = dataset.new_shape_test_scenes(args.shape, args.test_prompts, token=shape_words(args))
    # seeds 100+ : never a seed of the trainer or of its class images
    t_prompts = [s.caption for s in test_scenes for _ in range(args.seeds)]
    t_seeds = [100 + k for _ in test_scenes for k in range(args.seeds)]
    t_rep = [s for s in test_scenes for _ in range(args.seeds)]
    old = old_shape_scenes(args.model, args.old_prompts)
    o_prompts, o_seeds = [s.caption for s in old], [100 + i % 2 for i in range(len(old))]

    gen = Generator(args.model, args.threads)
    report["judge_new_shape_on_renders"] = judge.new_shape_accuracy_on_renders(50)
    t0 = time.perf_counter()
    if args.skip_before:
        new_imgs = old_imgs = []
        nan = float("nan")
        before_new, before_old = {"rate": nan}, {"standard": nan, "extended": nan}
    else:
        new_imgs, old_imgs = gen.images(t_prompts, t_seeds), gen.images(o_prompts, o_seeds)
    if not args.skip_before:
        before_new, before_old = new_shape_rate(new_imgs, t_rep, args.shape), old_shape_accuracy(old_imgs, old)
    grid = [("base", new_imgs, old_imgs)]
    report["before"] = {"new_shape": before_new, "old_shapes": before_old,
                        "generate_seconds": time.perf_counter() - t0}
    print("before", report["before"], flush=True)

    extra = regularisation_images(gen, args.regularise) if args.regularise else ()
    for method in args.methods:
        spec = make_spec(args, method, train_scenes, extra)
        trained, seconds, losses = train(spec)
        print(f"{method}: trained in {seconds:.1f} s", flush=True)
        if spec.full_finetune:  # a private model: generate from its folder, as a job on it would
            run_gen, lora = Generator(Path(trained), args.threads), None
        else:
            run_gen, f = gen, Path(tempfile.mkdtemp()) / f"{method}.safetensors"
            f.write_bytes(trained)
            lora = LoraRef(name=f"{args.shape}-{method}", sha256=hashlib.sha256(trained).hexdigest(), path=str(f))
        new_imgs, old_imgs = run_gen.images(t_prompts, t_seeds, lora), run_gen.images(o_prompts, o_seeds, lora)
        after_new, after_old = new_shape_rate(new_imgs, t_rep, args.shape), old_shape_accuracy(old_imgs, old)
        grid.append((method, new_imgs, old_imgs))
        report[method] = {"lora_targets": spec.lora_targets or "default", "steps": spec.steps, "rank": spec.rank, "learning_rate": spec.learning_rate,
                          "batch": spec.batch_size, "train_seconds": seconds,
                          "loss_first_last": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
                          "new_shape": after_new, "old_shapes": after_old}
        if method.startswith("dreambooth"):
            report[method] |= {"train_token_embeddings": spec.train_token_embeddings,
                               "token_lr_scale": finetune.TOKEN_EMBEDDING_LR_SCALE,
                               "adapter_lr_scale": finetune.ADAPTER_LR_SCALE,
                               "prior_warmup": finetune.PRIOR_WARMUP,
                               "lr_schedule": finetune.LR_SCHEDULE,
                               "train_text_encoder": spec.train_text_encoder,
                               "prior_loss_weight": spec.prior_loss_weight,
                               "class_prompt": spec.class_prompt, "class_prompts": list(spec.class_prompts),
                               "class_images": spec.num_class_images}
        print(method, report[method], flush=True)

    report["seconds"] = time.time() - t_start
    report["generate_seconds"] = gen.seconds
    if args.grid:
        from demo_model_quality import caption_grid

        k = 8
        cells, caps = [], []
        for name, new_imgs, old_imgs in grid:
            cells += new_imgs[:k] + old_imgs[:k]
            caps += [f"{name}: {p}" for p in t_prompts[:k] + o_prompts[:k]]
        caption_grid(cells, caps, args.grid, cols=2 * k)
        report["grid"] = str(args.grid)
    pct = lambda v: f"{100 * v:.1f}%"
    lines = [f"new shape: {args.shape} ({args.images} training images, token {shape_words(args)!r}); held-out: "
             f"{args.test_prompts} prompts x {args.seeds} seeds; old shapes: {len(old)} one-object prompts",
             "| method | steps | rank | lr | train time | new shape (held-out) | old shapes, standard judge | "
             "old shapes, extended judge |", "|---|---|---|---|---|---|---|---|",
             f"| base model | - | - | - | - | {pct(before_new['rate'])} | {pct(before_old['standard'])} | "
             f"{pct(before_old['extended'])} |"]
    for method in args.methods:
        r = report[method]
        d_std = 100 * (r["old_shapes"]["standard"] - before_old["standard"])
        d_ext = 100 * (r["old_shapes"]["extended"] - before_old["extended"])
        lines.append(f"| {method} | {r['steps']} | {r['rank']} | {r['learning_rate']:g} | {r['train_seconds']:.0f} s | "
                     f"{pct(r['new_shape']['rate'])} | {pct(r['old_shapes']['standard'])} ({d_std:+.1f}) | "
                     f"{pct(r['old_shapes']['extended'])} ({d_ext:+.1f}) |")
    table = "\n".join(lines)
    report["table"] = table
    print(json.dumps(report, indent=1))
    print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
