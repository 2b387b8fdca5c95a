"""A judge of generated images, trained only on the renderer's ground truth.

Colour, background and position come from exact pixel statistics against the
renderer's palette:

* every pixel is assigned its nearest palette colour; pixels far from every
  palette colour (blurry edges, artefacts) are ignored;
* the background is the most common colour of the 3-pixel border frame;
* each other colour with at least ``MIN_PIXELS`` pixels is an object; its
  position is the 3x3 grid cell of its centroid.

Shape comes from a small CNN that looks at one object's binary mask (cropped
to its bounding box, 32x32). It is trained on masks drawn by the renderer
(``dataset.object_mask``) with blur/threshold/noise augmentation, never on
model outputs. ``python -m generation.engine.training.judge`` retrains it and
reports the whole judge's accuracy on fresh renders.

The extended judge (``extended=True``) knows ``EXT_SHAPES``: the shipped shapes plus the
renderer's ``NEW_SHAPES`` that fine-tuning teaches the demo model (benchmarks/finetune_shape.py).
Its CNN is a separate file, ``judge_shape_ext.safetensors`` (``--extended`` retrains it), so the
original judge and every number measured with it stay as they were.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import dataset
from .dataset import COLOURS, NEW_SHAPES, PALETTE, POSITIONS, SHAPES, SIZE, Obj, Scene

WEIGHTS = Path(__file__).with_name("judge_shape.safetensors")
EXT_SHAPES = SHAPES + NEW_SHAPES
WEIGHTS_EXT = Path(__file__).with_name("judge_shape_ext.safetensors")
MIN_PIXELS = 40
MAX_PALETTE_DIST = 70.0  # RGB euclidean distance to the nearest palette colour
CROP = 32
_PAL = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
_CELL = {v: k for k, v in POSITIONS.items()}


# ----------------------------------------------------------------------------- shape CNN


class ShapeNet(nn.Module):
    def __init__(self, n_classes: int = len(SHAPES)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, n_classes),
        )

    def forward(self, x):
        return self.net(x)


def crop_mask(mask: np.ndarray) -> np.ndarray:
    """Binary HxW mask -> float32 CROPxCROP, the object's bounding box made square."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((CROP, CROP), np.float32)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) + 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    # affine crop of the square box (zero padding outside the image)
    theta = torch.tensor([[[side / mask.shape[1], 0, (2 * cx / mask.shape[1]) - 1],
                           [0, side / mask.shape[0], (2 * cy / mask.shape[0]) - 1]]], dtype=torch.float32)
    grid = F.affine_grid(theta, (1, 1, CROP, CROP), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0].numpy()


def _random_training_mask(rng: random.Random, shapes: tuple[str, ...] = SHAPES) -> tuple[np.ndarray, int]:
    shape = rng.randrange(len(shapes))
    size = rng.choice(("small", "medium", "large"))
    r = dataset.SIZES[size]
    o = Obj(shapes[shape], "white", size, None, rng.uniform(r + 1, SIZE - r - 1),
            rng.uniform(r + 1, SIZE - r - 1), rng.uniform(-12, 12))
    m = np.asarray(dataset.object_mask(o), dtype=np.float32) / 255.0
    # augment: blur, then a random threshold (fatter/thinner), then flipped pixels
    if rng.random() < 0.7:
        k = rng.choice((3, 5))
        mt = torch.from_numpy(m)[None, None]
        m = F.avg_pool2d(mt, k, stride=1, padding=k // 2, count_include_pad=False)[0, 0].numpy()
    m = m > rng.uniform(0.25, 0.75)
    if rng.random() < 0.5:
        noise = np.random.default_rng(rng.randrange(1 << 30)).random(m.shape) < rng.uniform(0, 0.03)
        near = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        if len(xs):
            near[max(0, ys.min() - 3):ys.max() + 4, max(0, xs.min() - 3):xs.max() + 4] = True
        m = m ^ (noise & near)
    return crop_mask(m), shape


def train_shape_net(steps: int = 2500, seed: int = 0, n_masks: int = 12000,
                    shapes: tuple[str, ...] = SHAPES) -> ShapeNet:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    data = [_random_training_mask(rng, shapes) for _ in range(n_masks)]
    x = torch.from_numpy(np.stack([d[0] for d in data]))[:, None]
    y = torch.tensor([d[1] for d in data])
    net = ShapeNet(len(shapes))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"shape net step {step} loss {loss.item():.3f}", flush=True)
    return net.eval()


_NETS: dict[bool, ShapeNet] = {}


def shape_net(extended: bool = False) -> ShapeNet:
    """The shape CNN: over SHAPES, or (``extended``) over EXT_SHAPES."""
    if extended not in _NETS:
        from safetensors.torch import load_file

        net = ShapeNet(len(EXT_SHAPES) if extended else len(SHAPES))
        net.load_state_dict(load_file(WEIGHTS_EXT if extended else WEIGHTS))
        _NETS[extended] = net.eval()
    return _NETS[extended]


# ----------------------------------------------------------------------------- judging


@dataclass
class Detected:
    colour: str
    pixels: int
    cx: float
    cy: float
    position: str
    shape: str
    shape_confidence: float


@dataclass
class Judgement:
    background: str
    objects: list[Detected]  # largest first

    def find(self, colour: str) -> Detected | None:
        return next((o for o in self.objects if o.colour == colour), None)


def _open(mask: np.ndarray) -> np.ndarray:
    """Morphological opening (3x3): drops 1-pixel fringes, e.g. antialiased edges
    of another object whose blend colour happens to be nearest to this colour."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    eroded = -F.max_pool2d(-t, 3, stride=1, padding=1)
    opened = F.max_pool2d(eroded, 3, stride=1, padding=1)
    return opened[0, 0].numpy() > 0.5


def _as_array(image) -> np.ndarray:
    a = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    return a


def judge(image, *, extended: bool = False) -> Judgement:
    """Detect background and objects in one RGB image (PIL or HxWx3 array).

    ``extended``: shapes are named from EXT_SHAPES (the new shapes too) by the extended CNN."""
    a = _as_array(image)
    h, w, _ = a.shape
    d = ((a[:, :, None, :] - _PAL[None, None]) ** 2).sum(-1)  # H W P
    nearest = d.argmin(-1)
    ok = np.sqrt(d.min(-1)) <= MAX_PALETTE_DIST
    border = np.zeros((h, w), bool)
    border[:3], border[-3:], border[:, :3], border[:, -3:] = True, True, True, True
    counts = np.bincount(nearest[border & ok], minlength=len(COLOURS))
    if counts.sum() == 0:
        counts = np.bincount(nearest[border], minlength=len(COLOURS))
    bg = int(counts.argmax())
    objects = []
    masks = []
    for ci in range(len(COLOURS)):
        if ci == bg:
            continue
        m = _open((nearest == ci) & ok)
        n = int(m.sum())
        if n >= MIN_PIXELS * (h * w) / (SIZE * SIZE):
            masks.append((n, ci, m))
    masks.sort(key=lambda t: -t[0])
    names = EXT_SHAPES if extended else SHAPES
    if masks:
        net = shape_net(extended)
        batch = torch.from_numpy(np.stack([crop_mask(m) for _, _, m in masks]))[:, None]
        with torch.no_grad():
            probs = net(batch).softmax(-1).numpy()
    for (n, ci, m), p in zip(masks, probs if masks else []):
        ys, xs = np.nonzero(m)
        cx, cy = xs.mean() * SIZE / w, ys.mean() * SIZE / h
        cell = (min(2, int(cx * 3 // SIZE)), min(2, int(cy * 3 // SIZE)))
        objects.append(Detected(COLOURS[ci], n, float(cx), float(cy), _CELL[cell],
                                names[int(p.argmax())], float(p.max())))
    return Judgement(COLOURS[bg], objects)


def score(image, scene: Scene, *, extended: bool = False) -> dict[str, bool | None]:
    """Per-attribute verdicts for one image against the scene its prompt describes.

    colour: one object: the largest detected object has the prompted colour; two
    objects: both prompted colours are among the detected objects. shape / position:
    for each prompted object, the
    detected object of its colour has that shape / that grid cell (None when the
    prompt gives no position). background: None when the prompt names none.
    two_object: for two-object prompts, colour, shape (and position if given) all right.
    ``extended``: judge shapes with the extended CNN (scenes of NEW_SHAPES need it).
    """
    j = judge(image, extended=extended)
    if len(scene.objects) == 1:
        colour_ok = bool(j.objects) and j.objects[0].colour == scene.objects[0].colour
    else:
        colour_ok = all(j.find(o.colour) is not None for o in scene.objects)
    shape_ok, pos_ok = True, True
    any_pos = False
    for o in scene.objects:
        det = j.find(o.colour)
        shape_ok &= det is not None and det.shape == o.shape
        if o.position is not None:
            any_pos = True
            pos_ok &= det is not None and det.position == o.position
    res = {
        "colour": colour_ok,
        "shape": shape_ok,
        "position": pos_ok if any_pos else None,
        "background": (j.background == scene.background) if scene.mentions_background else None,
        "two_object": None,
    }
    if len(scene.objects) == 2:
        res["two_object"] = colour_ok and shape_ok and (pos_ok if any_pos else True)
    return res


def accuracy_on_renders(n: int = 1000, seed: int = 12345, transform=None,
                        extended: bool = False) -> dict[str, float]:
    """The judge's own accuracy on fresh renderer scenes (never seen in training).

    ``transform(image) -> image`` is applied to each render first: with a VAE round trip it
    measures the ceiling that any UNet working through that VAE can reach."""
    tallies: dict[str, list[bool]] = {}
    rng = random.Random(seed)
    for _ in range(n):
        s = dataset.sample_scene(rng)
        image = dataset.render(s)
        for k, v in score(transform(image) if transform else image, s, extended=extended).items():
            if v is not None:
                tallies.setdefault(k, []).append(bool(v))
    return {k: float(np.mean(v)) for k, v in tallies.items()} | {"n": n}


def new_shape_accuracy_on_renders(n: int = 200, seed: int = 54321, transform=None) -> dict[str, float]:
    """The extended judge's shape accuracy on ``n`` fresh renders of each new shape (held-out
    colours, backgrounds and positions, as the fine-tuning benchmark prompts them)."""
    out: dict[str, float] = {}
    for shape in NEW_SHAPES:
        hits = 0
        for s in dataset.new_shape_test_scenes(shape, n, seed=seed):
            image = dataset.render(s)
            det = judge(transform(image) if transform else image, extended=True).find(s.objects[0].colour)
            hits += det is not None and det.shape == shape
        out[shape] = hits / n
    return out | {"n": n}


def main(argv=None):
    p = argparse.ArgumentParser(description="train the judge's shape CNN and report its accuracy")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--no-train", action="store_true", help="only report accuracy")
    p.add_argument("--extended", action="store_true",
                   help="the extended CNN (EXT_SHAPES, judge_shape_ext.safetensors) instead")
    p.add_argument("--n", type=int, default=1000, help="fresh renders for the accuracy report")
    args = p.parse_args(argv)
    if not args.no_train:
        from safetensors.torch import save_file

        net = train_shape_net(args.steps, shapes=EXT_SHAPES if args.extended else SHAPES)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  WEIGHTS_EXT if args.extended else WEIGHTS)
        _NETS.clear()
    print(json.dumps(accuracy_on_renders(args.n, extended=args.extended), indent=1))
    if args.extended:
        print(json.dumps(new_shape_accuracy_on_renders(args.n // 5), indent=1))


if __name__ == "__main__":
    main()
