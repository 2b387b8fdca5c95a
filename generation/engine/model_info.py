"""Describe a model folder from its JSON files alone: no torch, no diffusers.

The web process calls read_model_info() to validate forms, so this module must stay
import-light (json, hashlib, pathlib).

A model folder is a standard diffusers StableDiffusionPipeline folder (model_index.json,
unet/, vae/, text_encoder/, tokenizer/, scheduler/) plus an optional ``studio_model.json``:

    {"name": "demo", "family": "studio-demo",
     "native_width": 512, "native_height": 512, "max_width": 1024, "max_height": 1024,
     "latent_rgb_factors": [[r, g, b], ...one row per latent channel...],
     "latent_rgb_bias": [r, g, b],
     "preview_decoder": "preview_decoder.safetensors",
     "default_steps": 20, "default_guidance_scale": 7.0, "default_sampler": "euler_a"}

Every key is optional; what is missing is derived from the diffusers configs.
The short hash is computed once over the weights files and cached in ``studio_hash.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .contracts import (
    InvalidRequest,
    ModelError,
    ModelInfo,
    check_guidance_scale,
    check_sampler,
    check_steps,
)

STUDIO_MODEL_FILE = "studio_model.json"
HASH_CACHE_FILE = "studio_hash.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
SHORT_HASH_LEN = 10
PREVIEW_DECODER_PREFIX = "preview_decoder"

# Published linear latent->RGB factors (ComfyUI comfy/latent_formats.py), for latents as the
# UNet sees them (VAE latents times the VAE scaling factor). SD 2.x uses the SD 1.x VAE.
SD1_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD1_BIAS = (0.0, 0.0, 0.0)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)
KNOWN_PREVIEW_FACTORS = {"sd1": (SD1_FACTORS, SD1_BIAS), "sd2": (SD1_FACTORS, SD1_BIAS),
                         "sdxl": (SDXL_FACTORS, SDXL_BIAS)}


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} does not hold a JSON object")
    return data


def read_studio_json(folder: str | Path) -> dict:
    """The folder's studio_model.json as a dict ({} when there is none)."""
    path = Path(folder) / STUDIO_MODEL_FILE
    return _read_json(path) if path.exists() else {}


def weight_files(folder: str | Path) -> list[Path]:
    """The weights files under a model folder, in a fixed order (relative path).

    Not a preview decoder (``preview_decoder*`` at the top level): it changes no image, so adding
    or retraining one leaves the model's hash alone.
    """
    root = Path(folder)
    files = [
        p for p in root.rglob("*")
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
        and not (p.parent == root and p.name.startswith(PREVIEW_DECODER_PREFIX))
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _fingerprint(root: Path, files: list[Path]) -> dict[str, list[int]]:
    out = {}
    for p in files:
        st = p.stat()
        out[p.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def model_hash(folder: str | Path, *, compute: bool = True) -> str:
    """Short hash of a model folder: the first 10 hex digits of a sha256 over its weights files.

    For a folder with a single weights file it equals A1111's hash of that file. The result is
    cached in studio_hash.json, keyed by each file's size and mtime, so the cost (about one read
    of the weights) is paid once. With ``compute=False`` a missing cache gives "".
    """
    root = Path(folder)
    files = weight_files(root)
    if not files:
        raise ModelError(f"{root} holds no weights files ({', '.join(WEIGHT_SUFFIXES)})")
    return _cached_sha256(root, files, root / HASH_CACHE_FILE, compute)


def file_hash(path: str | Path, *, compute: bool = True) -> str:
    """model_hash for a single-file checkpoint (A1111's hash), cached in ``<file>.studio_hash.json``."""
    path = Path(path)
    return _cached_sha256(path.parent, [path], path.with_name(path.name + "." + HASH_CACHE_FILE), compute)


def _cached_sha256(root: Path, files: list[Path], cache_path: Path, compute: bool) -> str:
    fingerprint = _fingerprint(root, files)
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        if cached.get("files") == fingerprint and isinstance(cached.get("sha256"), str):
            return cached["sha256"][:SHORT_HASH_LEN]
    except (OSError, ValueError, AttributeError):
        pass
    if not compute:
        return ""
    digest = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    full = digest.hexdigest()
    try:
        cache_path.write_text(json.dumps({"sha256": full, "files": fingerprint}, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only model folder: recompute next time
    return full[:SHORT_HASH_LEN]


def _infer_family(model_index: dict, unet_cfg: dict) -> str:
    cls = str(model_index.get("_class_name", ""))
    if "XL" in cls or unet_cfg.get("addition_embed_type") == "text_time":
        return "sdxl"
    cross = unet_cfg.get("cross_attention_dim")
    if cross == 768:
        return "sd1"
    if cross == 1024:
        return "sd2"
    return "custom"


def _matrix(value, rows: int, cols: int, what: str) -> tuple:
    try:
        if rows == 0:
            out = tuple(float(x) for x in value)
            ok = len(out) == cols
        else:
            out = tuple(tuple(float(x) for x in row) for row in value)
            ok = len(out) == rows and all(len(r) == cols for r in out)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shape = f"{rows} x {cols}" if rows else f"{cols}"
        raise ModelError(f"{STUDIO_MODEL_FILE}: {what} must be {shape} numbers")
    return out


def read_model_info(path: str | Path, *, compute_hash: bool = True) -> ModelInfo:
    """Describe the model at ``path`` (a diffusers folder, or a single .safetensors file: see
    checkpoints.py) from JSON files only.

    Cheap once the hash is cached (see model_hash); never imports torch.
    """
    root = Path(path)
    single_file = None
    if root.is_file() or root.suffix.lower() in (".safetensors", ".ckpt"):
        from .checkpoints import detect  # json and the header only: still no torch

        single_file = detect(root)  # a CheckpointError (ModelError) says why a file is refused
    elif not root.is_dir():
        raise ModelError(f"{root} is not a model folder")
    config_root = single_file.config_dir if single_file else root  # a file's configs ship with us
    model_index = _read_json(config_root / "model_index.json")
    unet_cfg = _read_json(config_root / "unet" / "config.json")
    vae_cfg = _read_json(config_root / "vae" / "config.json")
    studio = {} if single_file else read_studio_json(root)

    vae_scale_factor = 2 ** (len(vae_cfg.get("block_out_channels", (0, 0, 0, 0))) - 1)
    sample_size = unet_cfg.get("sample_size", 64)
    if isinstance(sample_size, (list, tuple)):
        sample_h, sample_w = sample_size
    else:
        sample_h = sample_w = sample_size
    native_w = int(studio.get("native_width", sample_w * vae_scale_factor))
    native_h = int(studio.get("native_height", sample_h * vae_scale_factor))
    family = str(studio.get("family") or _infer_family(model_index, unet_cfg))
    if single_file:
        family = single_file.family
    channels = int(vae_cfg.get("latent_channels", unet_cfg.get("in_channels", 4)))

    factors = bias = None
    if "latent_rgb_factors" in studio:
        factors = _matrix(studio["latent_rgb_factors"], channels, 3, "latent_rgb_factors")
        bias = _matrix(studio.get("latent_rgb_bias", [0, 0, 0]), 0, 3, "latent_rgb_bias")
    elif family in KNOWN_PREVIEW_FACTORS:
        factors, bias = KNOWN_PREVIEW_FACTORS[family]
    elif channels == 4:
        factors, bias = SD1_FACTORS, SD1_BIAS  # most SD-shaped models keep the SD VAE

    defaults = _form_defaults(studio)
    return ModelInfo(
        name=str(studio.get("name") or (root.stem if single_file else root.name)),
        hash=file_hash(root, compute=compute_hash) if single_file else model_hash(root, compute=compute_hash),
        family=family,
        native_width=native_w,
        native_height=native_h,
        max_width=int(studio.get("max_width", 2 * native_w)),
        max_height=int(studio.get("max_height", 2 * native_h)),
        vae_scale_factor=vae_scale_factor,
        latent_channels=channels,
        latent_rgb_factors=factors,
        latent_rgb_bias=bias,
        preview_decoder="" if single_file else _preview_decoder(root, studio),
        path=str(root.resolve()),
        **defaults,
    )


def _preview_decoder(root: Path, studio: dict) -> str:
    """The absolute path of the model's trained preview decoder, "" when it has none."""
    name = studio.get("preview_decoder")
    if not name:
        return ""
    path = root / str(name)
    if not isinstance(name, str) or root.resolve() not in path.resolve().parents or not path.is_file():
        raise ModelError(f"{STUDIO_MODEL_FILE}: preview_decoder must name a file inside {root}")
    return str(path.resolve())


def _form_defaults(studio: dict) -> dict:
    """The model's suggested steps, guidance and sampler, checked as a request's would be."""
    checks = {"steps": check_steps, "guidance_scale": check_guidance_scale, "sampler": check_sampler}
    out = {}
    for field, check in checks.items():
        key = f"default_{field}"
        if studio.get(key) is None:
            continue
        try:
            check(studio[key])
        except InvalidRequest as error:
            raise ModelError(f"{STUDIO_MODEL_FILE}: {key} {error.message}") from None
        out[key] = float(studio[key]) if field == "guidance_scale" else studio[key]
    return out
