"""Procedural scenes for the studio-tiny demo model.

Every scene is one or two flat-coloured shapes on a flat background, drawn with
Pillow, plus a natural caption built from exactly what was drawn. A scene is a
plain ``Scene`` dataclass, so the same object drives the renderer, the caption
and the judge (``judge.py``), which checks generated images against it.

Everything here is deterministic: ``sample_scene(rng)`` takes a
``random.Random`` and ``render(scene)`` is a pure function of the scene.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

SIZE = 128  # native resolution of the demo model (pixels, square)
_SS = 4  # supersampling factor: shapes are drawn at 4x and box-filtered down

# Ten well separated colours; objects and backgrounds draw from the same set.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 220, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (140, 50, 190),
    "pink": (255, 130, 200),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross")
# Shapes the renderer can draw but the shipped model never saw: fine-tuning teaches them
# (benchmarks/finetune_shape.py). Never sampled by ``sample_scene``; not in ``vocabulary()``.
NEW_SHAPES = ("hexagon", "crescent")
# name -> (column, row) in a 3x3 grid; also used by the judge.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
# Radius (half the extent) in pixels at SIZE=128. "medium" is never written in
# captions: a caption without a size word shows a medium object.
SIZES = {"small": 13.0, "medium": 20.0, "large": 28.0}

# How a position is phrased in captions (the first is the canonical one).
_POSITION_PHRASES = {
    "top left": ("in the top left", "in the top left corner", "at the top left"),
    "top": ("at the top", "at the top"),
    "top right": ("in the top right", "in the top right corner", "at the top right"),
    "left": ("on the left", "at the left"),
    "centre": ("in the centre", "in the center", "in the middle"),
    "right": ("on the right", "at the right"),
    "bottom left": ("in the bottom left", "in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom"),
    "bottom right": ("in the bottom right", "in the bottom right corner", "at the bottom right"),
}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str = "medium"  # small | medium | large
    position: str | None = None  # a key of POSITIONS, or None (not in the caption)
    # Centre in pixels and rotation jitter, fixed when the scene is sampled.
    cx: float = SIZE / 2
    cy: float = SIZE / 2
    angle: float = 0.0


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    caption: str = ""
    mentions_background: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def cell_centre(position: str) -> tuple[float, float]:
    col, row = POSITIONS[position]
    return ((col + 0.5) * SIZE / 3, (row + 0.5) * SIZE / 3)


def _place(rng: random.Random, position: str | None, radius: float) -> tuple[float, float]:
    if position is None:
        cx, cy = rng.uniform(radius, SIZE - radius), rng.uniform(radius, SIZE - radius)
    else:
        cx, cy = cell_centre(position)
        jitter = SIZE / 14
        cx += rng.uniform(-jitter, jitter)
        cy += rng.uniform(-jitter, jitter)
    lo, hi = radius + 1, SIZE - radius - 1
    return min(max(cx, lo), hi), min(max(cy, lo), hi)


def sample_scene(rng: random.Random, *, two_object_rate: float = 0.35) -> Scene:
    """Draw a random scene (objects, background) and its caption."""
    background = rng.choice(COLOURS)
    n = 2 if rng.random() < two_object_rate else 1
    objs: list[Obj] = []
    if n == 1:
        colour = rng.choice([c for c in COLOURS if c != background])
        size = rng.choices(("small", "medium", "large"), (0.35, 0.3, 0.35))[0]
        position = rng.choice(list(POSITIONS)) if rng.random() < 0.8 else None
        cx, cy = _place(rng, position, SIZES[size])
        objs.append(Obj(rng.choice(SHAPES), colour, size, position, cx, cy, rng.uniform(-8, 8)))
    else:
        colours = rng.sample([c for c in COLOURS if c != background], 2)
        shapes = [rng.choice(SHAPES), rng.choice(SHAPES)]
        sizes = [rng.choices(("small", "medium"), (0.5, 0.5))[0] for _ in range(2)]
        if rng.random() < 0.6:  # explicit, non-adjacent positions
            while True:
                p1, p2 = rng.sample(list(POSITIONS), 2)
                (c1, r1), (c2, r2) = POSITIONS[p1], POSITIONS[p2]
                if max(abs(c1 - c2), abs(r1 - r2)) >= 2:
                    break
            positions = [p1, p2]
            centres = [_place(rng, p, SIZES[s]) for p, s in zip(positions, sizes)]
        else:  # unspecified: side by side (left/right or top/bottom), random order
            positions = [None, None]
            pair = rng.choice((("left", "right"), ("top", "bottom"), ("top left", "bottom right"),
                               ("bottom left", "top right")))
            if rng.random() < 0.5:
                pair = pair[::-1]
            centres = [_place(rng, p, SIZES[s]) for p, s in zip(pair, sizes)]
        for i in range(2):
            objs.append(Obj(shapes[i], colours[i], sizes[i], positions[i], *centres[i],
                            rng.uniform(-8, 8)))
    scene = Scene(tuple(objs), background)
    return _with_caption(scene, rng)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(o: Obj, rng: random.Random, with_position: bool = True) -> str:
    first = o.size if o.size != "medium" else o.colour
    words = [_article(first)]
    if o.size != "medium":
        words.append(o.size)
    words += [o.colour, o.shape]
    if with_position and o.position is not None:
        words.append(rng.choice(_POSITION_PHRASES[o.position]))
    return " ".join(words)


def _with_caption(scene: Scene, rng: random.Random) -> Scene:
    parts = [_object_phrase(o, rng) for o in scene.objects]
    text = " and ".join(parts)
    mentions_bg = rng.random() < 0.9
    if mentions_bg:
        form = rng.random()
        bg = scene.background
        if form < 0.5:
            text += f" on {_article(bg)} {bg} background"
        elif form < 0.8:
            text += f" on {bg}"
        else:
            text += f" against {_article(bg)} {bg} background"
    return Scene(scene.objects, scene.background, text, mentions_bg)


def canonical_caption(objects: list[Obj] | tuple[Obj, ...], background: str | None) -> str:
    """The caption the benchmark uses: first phrase of each kind, no randomness."""
    parts = []
    for o in objects:
        first = o.size if o.size != "medium" else o.colour
        words = [_article(first)] + ([o.size] if o.size != "medium" else []) + [o.colour, o.shape]
        if o.position is not None:
            words.append(_POSITION_PHRASES[o.position][0])
        parts.append(" ".join(words))
    text = " and ".join(parts)
    if background is not None:
        text += f" on {_article(background)} {background} background"
    return text


# ----------------------------------------------------------------------------- drawing


def _star(cx, cy, r, angle, points=5, inner=0.45):
    pts = []
    for k in range(points * 2):
        rad = r if k % 2 == 0 else r * inner
        a = math.radians(angle) - math.pi / 2 + k * math.pi / points
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _rotate(pts, cx, cy, angle):
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca) for x, y in pts]


def _heart(cx, cy, r, angle):
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + x * r / 16.5, cy - (y + 2.5) * r / 16.5))
    return _rotate(pts, cx, cy, angle)


def draw_object(draw: ImageDraw.ImageDraw, o: Obj, scale: float, fill) -> None:
    cx, cy, r = o.cx * scale, o.cy * scale, SIZES[o.size] * scale
    if o.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif o.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)  # hole cut in object_mask
    elif o.shape == "square":
        s = r * 0.88
        pts = [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
        draw.polygon(_rotate(pts, cx, cy, o.angle), fill=fill)
    elif o.shape == "triangle":
        pts = [(cx + r * math.cos(math.radians(-90 + 120 * k)),
                cy + 0.15 * r + r * math.sin(math.radians(-90 + 120 * k))) for k in range(3)]
        draw.polygon(_rotate(pts, cx, cy, o.angle), fill=fill)
    elif o.shape == "star":
        draw.polygon(_star(cx, cy, r * 1.08, o.angle), fill=fill)
    elif o.shape == "heart":
        draw.polygon(_heart(cx, cy, r, o.angle), fill=fill)
    elif o.shape == "hexagon":
        pts = [(cx + r * math.cos(math.radians(60 * k)), cy + r * math.sin(math.radians(60 * k)))
               for k in range(6)]
        draw.polygon(_rotate(pts, cx, cy, o.angle), fill=fill)
    elif o.shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)  # bite cut in object_mask
    elif o.shape == "cross":
        w = r * 0.36
        arms = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
                (-r, w), (-r, -w), (-w, -w)]
        draw.polygon(_rotate([(cx + x, cy + y) for x, y in arms], cx, cy, o.angle), fill=fill)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def object_mask(o: Obj, size: int = SIZE) -> Image.Image:
    """Antialiased 'L' mask of one object (255 inside)."""
    big = Image.new("L", (size * _SS, size * _SS), 0)
    d = ImageDraw.Draw(big)
    scale = _SS * size / SIZE
    draw_object(d, o, scale, 255)
    if o.shape == "ring":
        cx, cy, ri = o.cx * scale, o.cy * scale, SIZES[o.size] * scale * 0.55
        d.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    elif o.shape == "crescent":  # a disc with an offset disc bitten out (opening to the right)
        r = SIZES[o.size] * scale
        a = math.radians(o.angle)
        bx, by = o.cx * scale + 0.45 * r * math.cos(a), o.cy * scale + 0.45 * r * math.sin(a)
        rb = 0.8 * r
        d.ellipse((bx - rb, by - rb, bx + rb, by + rb), fill=0)
    return big.resize((size, size), Image.Resampling.BOX)


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """The RGB image of a scene (objects drawn in order, later ones on top)."""
    img = Image.new("RGB", (size, size), PALETTE[scene.background])
    for o in scene.objects:
        layer = Image.new("RGB", (size, size), PALETTE[o.colour])
        img.paste(layer, (0, 0), object_mask(o, size))
    return img


# ----------------------------------------------------------------------------- bulk


def scene_for_index(seed: int, index: int) -> Scene:
    """The scene number ``index`` of the dataset with ``seed``: independent of workers."""
    return sample_scene(random.Random(seed * 1_000_003 + index))


def _render_chunk(args):
    import numpy as np

    seed, start, stop = args
    imgs = np.empty((stop - start, SIZE, SIZE, 3), dtype=np.uint8)
    caps = []
    for i in range(start, stop):
        s = scene_for_index(seed, i)
        imgs[i - start] = np.asarray(render(s))
        caps.append(s.caption)
    return imgs, caps


def render_dataset(n: int, seed: int, workers: int = 1):
    """Render ``n`` scenes: (uint8 array [n, H, W, 3], list of captions)."""
    import numpy as np

    chunk = 1000
    jobs = [(seed, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(j) for j in jobs]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def vocabulary() -> list[str]:
    """Every word a caption can contain (the tokenizer's whole-word vocabulary)."""
    words = {"a", "and", "on", "in", "at", "the", "of", "background", "against", "corner",
             "with", "an", "image", "picture", "medium", "big", "tiny", "two", "one"}
    words |= set(COLOURS) | set(SHAPES) | {"small", "large"}
    for phrases in _POSITION_PHRASES.values():
        for p in phrases:
            words |= set(p.split())
    return sorted(words)


# ----------------------------------------------------------------------------- new shapes
#
# Teaching the shipped model a shape it never saw (docs/fine-tuning.md): a few training scenes of
# one new shape, captioned with a rare token in place of the shape word, and held-out scenes whose
# object colours, backgrounds and positions the training scenes never had. Nothing above changes:
# ``sample_scene`` never draws a new shape, so the shipped dataset is the same as before.

# Object colours, backgrounds and positions of the training scenes, and the disjoint ones of the
# held-out scenes. A held-out object colour may have been a training background and the other way
# round, but no held-out scene repeats a training scene's object colour, background or position.
NEW_SHAPE_TRAIN_SPLIT = {
    "colours": ("red", "yellow", "green", "white", "blue"),
    "backgrounds": ("black", "gray", "purple", "pink", "orange"),
    "positions": ("centre", "left", "right", "top", "bottom"),
}
NEW_SHAPE_TEST_SPLIT = {
    "colours": ("orange", "purple", "pink", "gray", "black"),
    "backgrounds": ("red", "yellow", "green", "white", "blue"),
    "positions": ("top left", "top right", "bottom left", "bottom right"),
}


def token_caption(obj: Obj, background: str | None, token: str) -> str:
    """The canonical caption of a one-object scene with ``token`` for the shape word:
    'a large red zwx in the top left on a blue background'."""
    return canonical_caption([Obj(token, obj.colour, obj.size, obj.position)], background)


def _new_shape_scenes(shape: str, n: int, seed: int, token: str, split: dict) -> list[Scene]:
    if shape not in NEW_SHAPES and shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}")
    rng = random.Random(seed)
    out: list[Scene] = []
    seen: set[str] = set()
    while len(out) < n:
        background = rng.choice(split["backgrounds"])
        colour = rng.choice([c for c in split["colours"] if c != background])
        size = rng.choice(("small", "medium", "large"))
        position = rng.choice(split["positions"])
        cx, cy = _place(rng, position, SIZES[size])
        o = Obj(shape, colour, size, position, cx, cy, rng.uniform(-8, 8))
        caption = token_caption(o, background, token)
        if caption in seen and len(seen) < 4 * n:  # prefer distinct captions
            continue
        seen.add(caption)
        out.append(Scene((o,), background, caption, True))
    return out


def new_shape_training_scenes(shape: str, n: int, *, token: str = "zwx", seed: int = 0) -> list[Scene]:
    """``n`` one-object scenes of ``shape`` (from NEW_SHAPE_TRAIN_SPLIT), captioned with ``token``."""
    return _new_shape_scenes(shape, n, seed, token, NEW_SHAPE_TRAIN_SPLIT)


def new_shape_test_scenes(shape: str, n: int, *, token: str = "zwx", seed: int = 1) -> list[Scene]:
    """``n`` held-out scenes of ``shape``: object colours, backgrounds and positions from
    NEW_SHAPE_TEST_SPLIT, none of which a training scene had. Captions use ``token``."""
    return _new_shape_scenes(shape, n, seed + 7919, token, NEW_SHAPE_TEST_SPLIT)
