"""Single-file checkpoints (.safetensors) of SD 1.x, SD 2.x and SDXL base, loaded fully offline.

The family is read from the tensors' names and shapes (never the file name); the diffusers
configs each family needs ship in model_configs/, and the CLIP tokenizer files are built from the
open-clip-torch wheel (clip_tokenizer.py). Pickle checkpoints (.ckpt, .pt, .bin) are refused: they
can run code when loaded.

SD 2.x: weights cannot tell v-prediction from epsilon. Rule: v-prediction at 768 px (SD 2.0-v /
2.1, the common release), unless told otherwise by ``prediction=`` or by an A1111-style YAML
beside the file (``<name>.yaml`` without ``parameterization: "v"`` means epsilon, 512 px base);
an SD 2.x inpainting model (9-channel UNet) is epsilon, as SD 2.0-inpainting is.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .contracts import ModelError

CONFIGS = Path(__file__).parent / "model_configs"
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

# A key that only each family's text encoder(s) have, and the text-encoder width that feeds the UNet.
SD1_TEXT = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_TEXT = "cond_stage_model.model.token_embedding.weight"
SDXL_TEXT_1 = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
SDXL_TEXT_2 = "conditioner.embedders.1.model.token_embedding.weight"
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
UNET_PREFIX = "model.diffusion_model."


class CheckpointError(ModelError):
    """A file that is not a loadable single-file checkpoint; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    family: str           # "sd1", "sd2" or "sdxl"
    prediction: str       # "epsilon" or "v_prediction"
    config_dir: Path      # the diffusers config folder the loader uses
    native_size: int      # the side the model was trained at
    inpainting: bool      # a 9-channel UNet

    @property
    def pipeline_class(self) -> str:
        return "StableDiffusionXLPipeline" if self.family == "sdxl" else "StableDiffusionPipeline"


def read_header(path: str | Path) -> dict[str, dict]:
    """The safetensors header: tensor name -> {dtype, shape, data_offsets}; no tensor is read."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name}: pickle checkpoints ({path.suffix}) are refused, they can run code "
                              "when loaded; convert it to .safetensors first")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path.name}: a single-file checkpoint must be a .safetensors file")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path.name} is not a safetensors file (only {size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path.name} is not a safetensors file (or it is truncated): "
                                      "its header length does not fit the file")
            raw = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path.name} is not a safetensors file: its header is not JSON") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + length + end > size:
        raise CheckpointError(f"{path.name} is truncated: its tensors need {8 + length + end} bytes, "
                              f"the file has {size}")
    return header


def detect(path: str | Path, prediction: str | None = None) -> Checkpoint:
    """Which family a .safetensors checkpoint is, from its tensors; CheckpointError if none."""
    path = Path(path)
    header = read_header(path)
    shapes = {name: tensor["shape"] for name, tensor in header.items()}
    if UNET_IN not in shapes:
        raise CheckpointError(f"{path.name} has no Stable Diffusion UNet ({UNET_PREFIX}...): "
                              "not an SD 1.x, SD 2.x or SDXL checkpoint")
    inpainting = shapes[UNET_IN][1] == 9
    if SDXL_TEXT_1 in shapes and SDXL_TEXT_2 in shapes:
        family, text_width = "sdxl", shapes[SDXL_TEXT_1][1] + shapes[SDXL_TEXT_2][1]
    elif SD2_TEXT in shapes:
        family, text_width = "sd2", shapes[SD2_TEXT][1]
    elif SD1_TEXT in shapes:
        family, text_width = "sd1", shapes[SD1_TEXT][1]
    else:
        raise CheckpointError(f"{path.name}: no text encoder of SD 1.x (cond_stage_model.transformer), SD 2.x "
                              "(cond_stage_model.model) or SDXL (conditioner.embedders.0/1) in the file")
    context = _cross_attention_width(shapes)
    if context != text_width:
        raise CheckpointError(f"{path.name}: its text encoder gives {text_width}-wide embeddings but its UNet "
                              f"attends to {context}: not a {family} checkpoint we know")
    prediction = _prediction(path, family, prediction, inpainting)
    config, size = _config_for(family, prediction)
    return Checkpoint(path, family, prediction, CONFIGS / config, size, inpainting)


def _cross_attention_width(shapes: dict[str, list[int]]) -> int | None:
    for name, shape in shapes.items():
        if name.startswith(UNET_PREFIX) and name.endswith("attn2.to_k.weight"):
            return shape[1]
    return None


def _prediction(path: Path, family: str, override: str | None, inpainting: bool) -> str:
    if override is not None:
        if override not in ("epsilon", "v_prediction"):
            raise CheckpointError(f"prediction must be 'epsilon' or 'v_prediction', not {override!r}")
        return override
    if family != "sd2" or inpainting:  # SD 2.0's inpainting model is epsilon (512 px)
        return "epsilon"
    yaml = path.with_suffix(".yaml")
    if yaml.is_file():  # A1111's convention: the original LDM config beside the checkpoint
        text = yaml.read_text(errors="replace")
        return "v_prediction" if "parameterization" in text and '"v"' in text.replace("'", '"') else "epsilon"
    return "v_prediction"


def _config_for(family: str, prediction: str) -> tuple[str, int]:
    if family == "sd1":
        return "sd15", 512
    if family == "sdxl":
        return "sdxl", 1024
    return ("sd21", 768) if prediction == "v_prediction" else ("sd21-base", 512)


def load_pipeline(path: str | Path, *, dtype=None, prediction: str | None = None,
                  config_dir: str | Path | None = None, tokenizer_cache: str | Path | None = None):
    """A diffusers pipeline (StableDiffusionPipeline or StableDiffusionXLPipeline) from a single file.

    ``config_dir`` replaces the shipped config folder (tests use shrunk configs); nothing is fetched.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import SafetensorError

    from .clip_tokenizer import TokenizerFilesMissing, load_clip_tokenizer
    from .loading import dtype_kwarg, quiet_progress

    checkpoint = detect(path, prediction)
    config = Path(config_dir) if config_dir else checkpoint.config_dir
    if not (config / "model_index.json").is_file():
        # diffusers would go to the hub for a config folder it cannot find: never let it.
        raise CheckpointError(f"no diffusers config folder at {config}")
    try:
        tokenizers = _tokenizers(checkpoint.family, load_clip_tokenizer, tokenizer_cache)
    except TokenizerFilesMissing as exc:
        raise CheckpointError(str(exc)) from exc
    cls = StableDiffusionXLPipeline if checkpoint.family == "sdxl" else StableDiffusionPipeline
    extra = {} if checkpoint.family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                                     "requires_safety_checker": False}
    try:
        with quiet_progress(), _unet_channels(config, 9 if checkpoint.inpainting else None) as config:
            pipe = cls.from_single_file(str(checkpoint.path), config=str(config), local_files_only=True,
                                        **tokenizers, **extra,
                                        **dtype_kwarg(dtype or torch.float32))  # not the configs' own dtypes
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot load {checkpoint.path.name} as {checkpoint.family}: {exc}") from exc
    pipe.scheduler.register_to_config(prediction_type=checkpoint.prediction)
    pipe.checkpoint = checkpoint  # what was detected, for the engine's model info
    return pipe


@contextlib.contextmanager
def _unet_channels(config: Path, in_channels: int | None):
    """The config folder, or a temporary copy whose UNet takes ``in_channels`` (9: an inpainting
    model: latents, mask and masked-image latents)."""
    if in_channels is None:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="studio-config-") as tmp:
        copy = Path(tmp) / config.name
        shutil.copytree(config, copy)
        unet = json.loads((copy / "unet" / "config.json").read_text())
        (copy / "unet" / "config.json").write_text(json.dumps({**unet, "in_channels": in_channels}))
        yield copy


def _tokenizers(family: str, load, cache) -> dict:
    if family == "sd1":
        return {"tokenizer": load("clip", cache)}
    if family == "sd2":
        return {"tokenizer": load("open_clip", cache)}
    return {"tokenizer": load("clip", cache), "tokenizer_2": load("open_clip", cache)}
