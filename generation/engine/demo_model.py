"""Build the demo model: a tiny, randomly initialised, SD-shaped diffusers pipeline.

    python -m generation.engine.demo_model build DEST [--seed 0] [--force]

It is a standard StableDiffusionPipeline folder (safetensors) plus studio_model.json, so it loads
through exactly the same Engine code path as a real checkpoint. Its images are noise-like
patterns (the weights are random), but everything around them is real: tokenizer, text
encoder, cross-attention UNet, 8x VAE, schedulers, previews, PNG metadata. It renders
512x512 in 20 steps in a couple of seconds on a laptop CPU.

The build is deterministic for a given seed (same seed -> same weight bytes -> same hash) and
idempotent: an existing build with the same seed and DEMO_VERSION is kept unless --force.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .model_info import STUDIO_MODEL_FILE, model_hash, read_studio_json

DEMO_VERSION = 1
DEMO_NAME = "studio-demo"
NATIVE = 512
MAX_SIDE = 1024
TOKENIZER_MAX_LENGTH = 77

# Words the tokenizer knows as whole tokens (anything else falls back to byte tokens, as in CLIP).
_WORDS = """
a an the of and with in on at by for from to under over near behind beside between into
photo photograph picture painting drawing sketch illustration render portrait landscape closeup
cat dog bird horse fish fox owl lion tiger bear rabbit dragon robot person man woman child face
tree trees forest flower flowers garden grass mountain mountains hill river lake sea ocean beach
sky cloud clouds sun moon star stars night day sunset sunrise rain snow fog storm fire water
house castle city street road bridge tower village room window door car boat ship train
red orange yellow green blue purple pink brown black white gray grey gold silver dark light
bright colorful vivid pastel soft warm cold big small tiny huge old new beautiful cute
detailed highly intricate sharp focus blurry blur lowres low quality best masterpiece
realistic photorealistic cinematic dramatic lighting studio epic fantasy style art oil
watercolor digital anime cartoon pixel minimal abstract background foreground center wide
lens camera bokeh hdr 4k 8k ugly deformed bad text watermark signature cropped worst jpeg
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_tokenizer_files(folder: Path) -> int:
    """Write vocab.json and merges.txt for a small CLIP BPE; return the vocabulary size.

    Base vocabulary: the 256 byte characters, alone and with CLIP's end-of-word marker ``</w>``.
    Merges: a BPE learned on _WORDS until each word is one token (ties broken by text, so fixed).
    """
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars]
    seqs = [tuple(w[:-1]) + (w[-1] + "</w>",) for w in sorted(set(_WORDS))]
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for seq in seqs:
            pairs.update(zip(seq, seq[1:]))
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        new_seqs = []
        for seq in seqs:
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new_seqs.append(tuple(out))
        seqs = new_seqs
    for a, b in merges:
        if a + b not in vocab_list:
            vocab_list.append(a + b)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return len(vocab)


def _scheduler_config() -> dict:
    # Stable Diffusion 1.x's scheduler_config.json (the Engine swaps in the requested sampler), with
    # v-prediction as in SD 2.x-768: a random UNet's output then keeps the latents near unit scale
    # instead of blowing them up (epsilon-prediction divides by sqrt(alpha_bar) ~ 0.07).
    return dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        prediction_type="v_prediction",
    )


def _shape_demo_decoder(decoder) -> None:
    """Make the random VAE decoder a smooth, nearly per-pixel colour map of the latents.

    A randomly initialised decoder mixes neighbouring latents through many random 3x3 kernels, so
    its output is unrelated, high-frequency noise, and no latent->RGB preview can resemble it.
    Turning the resnets' residual branches off, damping the off-centre kernel taps and raising the
    output gain gives a colourful mosaic that a fitted linear preview approximates (r ~ 0.8), so
    the demo shows the same behaviour as a real model: previews that converge to the final image.
    """
    import torch
    from diffusers.models.resnet import ResnetBlock2D

    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
            elif isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
                mask = torch.full((3, 3), 0.2)
                mask[1, 1] = 1.0
                module.weight.mul_(mask)
        decoder.conv_out.weight.mul_(3.0)


def build_pipeline(seed: int = 0):
    """The tiny pipeline in memory (deterministic for a seed): studio-tiny's builders, smaller sizes."""
    import torch
    from diffusers import PNDMScheduler
    from transformers import CLIPTokenizer

    from .training.models import assemble_pipeline, build_text_encoder, build_unet, build_vae

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = build_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=TOKENIZER_MAX_LENGTH)
    tokenizer.model_max_length = TOKENIZER_MAX_LENGTH

    torch.manual_seed(seed)
    text_encoder = build_text_encoder(vocab_size, tokenizer.bos_token_id, tokenizer.eos_token_id, width=32,
                                      intermediate=64, layers=2, heads=2, max_length=TOKENIZER_MAX_LENGTH,
                                      activation="quick_gelu")
    torch.manual_seed(seed + 1)
    unet = build_unet(sample_size=NATIVE // 8, down_blocks=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_blocks=("CrossAttnUpBlock2D", "UpBlock2D"), channels=(32, 64),
                      cross_attention_dim=32, heads=4, norm_groups=16)
    torch.manual_seed(seed + 2)
    vae = build_vae(channels=(8, 16, 16, 16), norm_groups=8, sample_size=NATIVE, scaling_factor=0.18215)
    _shape_demo_decoder(vae.decoder)
    return assemble_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                             scheduler=PNDMScheduler(**_scheduler_config()))


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_built(dest: str | Path, seed: int = 0) -> bool:
    dest = Path(dest)
    try:
        build = read_studio_json(dest).get("demo_build", {})
    except Exception:
        return False
    return (
        build.get("seed") == seed
        and build.get("version") == DEMO_VERSION
        and (dest / "model_index.json").exists()
    )


def build(dest: str | Path, *, seed: int = 0, force: bool = False, fit_samples: int = 24) -> Path:
    """Build the demo model into ``dest`` (skipped when already built with this seed and version).

    Written to a temporary sibling folder and renamed into place, so a reader never sees half a model.
    """
    from .loading import quiet_progress
    from .preview_fit import fit_pipeline_previews

    dest = Path(dest)
    if not force and is_built(dest, seed):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        with _torch_threads(1):  # tiny model: one thread is as fast, and immune to oversubscribed CPUs
            pipe = build_pipeline(seed)
            with quiet_progress():
                pipe.save_pretrained(tmp, safe_serialization=True)
            # transformers 5 saves tokenizer.json only; the classic files keep transformers 4.x loading it.
            build_tokenizer_files(tmp / "tokenizer")
            fit = fit_pipeline_previews(pipe, samples=fit_samples, seed=seed)
        studio = {
            "name": DEMO_NAME,
            "family": "studio-demo",
            "native_width": NATIVE,
            "native_height": NATIVE,
            "max_width": MAX_SIDE,
            "max_height": MAX_SIDE,
            "latent_rgb_factors": fit.factors,
            "latent_rgb_bias": fit.bias,
            "latent_rgb_fit": {"correlation": fit.correlation, "samples": fit.samples,
                               "space": "unet latents (VAE latents x scaling_factor)"},
            "demo_build": {"seed": seed, "version": DEMO_VERSION},
        }
        (tmp / STUDIO_MODEL_FILE).write_text(json.dumps(studio, indent=2) + "\n", encoding="utf-8")
        model_hash(tmp)  # computed now, cached in studio_hash.json
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
        # The cache keys on mtimes, which the rename keeps; recompute only if the filesystem disagrees.
        model_hash(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generation.engine.demo_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the demo model into DEST")
    b.add_argument("dest")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="rebuild even when DEST holds this build")
    args = parser.parse_args(argv)
    if args.command == "build":
        already = not args.force and is_built(args.dest, args.seed)
        path = build(args.dest, seed=args.seed, force=args.force)
        from .model_info import read_model_info

        info = read_model_info(path)
        state = "already built" if already else "built"
        print(f"{state}: {path} (name {info.name}, hash {info.hash}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
