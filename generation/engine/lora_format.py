"""LoRA files: read what a `.safetensors` LoRA holds, check it fits a model, and write the
kohya/A1111 format. Torch-free at import: the web process inspects uploads with it.

Three key layouts are read (the format names are what ``LoraSummary.format`` reports):

``kohya``
    What kohya's sd-scripts write and AUTOMATIC1111, ComfyUI, InvokeAI and SD.Next load:
    ``lora_unet_<module path with '_' for '.'>.lora_down.weight`` / ``.lora_up.weight`` /
    ``.alpha`` (a scalar), and ``lora_te_text_model_...`` (``lora_te1_``/``lora_te2_`` for
    SDXL's two text encoders). SD 1.x/2.x LoRAs name the diffusers UNet's modules; SDXL LoRAs
    name the original (SGM) UNet's modules (``input_blocks_4_1_...``).
``diffusers``
    What a diffusers pipeline's ``save_lora_weights`` writes: ``unet.<module>.lora_A.weight`` /
    ``.lora_B.weight`` and ``text_encoder.<module>...`` (older files: ``.lora.down.weight`` /
    ``.lora.up.weight``, or ``...processor.to_q_lora.down.weight``). No alpha in the keys: alpha
    comes from the ``lora_adapter_metadata`` JSON when present, else it equals the rank.
``peft``
    A bare PEFT state dict of one model (``get_peft_model_state_dict``): ``<module>.lora_A.weight``
    without a component prefix (maybe ``base_model.model.``); text encoder modules are told by
    their names (``text_model.`` / ``encoder.layers.``).

The effective change of a module is ``weight * alpha / rank * up @ down`` (kohya's convention).

Safety: a pickle (``.ckpt``/``.pt``/``.bin``, or zip/pickle magic bytes) is refused before
anything else and is never unpickled; the header is length-checked before it is parsed; tensor
data is never read except the few scalar ``.alpha`` tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .contracts import InvalidRequest

FIELD = "lora"
MAX_HEADER_BYTES = 16 * 1024 * 1024  # an SDXL LoRA with every module: well under 1 MiB
MAX_TENSORS = 20000
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")

_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_SCALAR_FORMATS = {"F64": "<d", "F32": "<f", "F16": "<e"}


class LoraFileError(InvalidRequest):
    """The file is not a LoRA we can use (or not on this model). ``message`` says why."""

    def __init__(self, message: str):
        super().__init__(FIELD, message)


@dataclass(frozen=True)
class LoraModule:
    """One module a LoRA changes. ``name`` is the module's dotted path inside its component
    (text encoder names without the ``text_model.`` prefix); ``model_module`` is the module it
    maps to in the model given to inspect_lora (same as name; "" when no model was given)."""

    component: str  # "unet" | "text_encoder" | "text_encoder_2"
    name: str
    down_key: str
    up_key: str
    alpha_key: str  # "" when the file stores no alpha for it
    rank: int
    alpha: float
    down_shape: tuple[int, ...]
    up_shape: tuple[int, ...]
    model_module: str = ""


@dataclass(frozen=True)
class LoraSummary:
    format: str  # "kohya" | "diffusers" | "peft"
    rank: int  # the largest rank of its modules
    alpha: float  # the most common alpha (alpha / rank is the scale at weight 1)
    unet_modules: tuple[str, ...]
    text_encoder_modules: tuple[str, ...]  # both text encoders' for SDXL ("text_encoder_2:" prefixed)
    base_family_guess: str  # "sd1" | "sd2" | "sdxl" | "" (unknown)
    metadata: dict[str, str] = field(default_factory=dict)
    # Additions beyond the agreed interface (defaulted):
    modules: tuple[LoraModule, ...] = ()
    tensor_count: int = 0
    model_name: str = ""  # the model it was checked against ("" without model_path)


# -- the safetensors header ------------------------------------------------------------------------


def _refuse_pickle(data: bytes, filename: str) -> None:
    name = (filename or "").lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise LoraFileError(
            f"{Path(filename).name} is a pickle file ({Path(name).suffix}); only .safetensors LoRAs are "
            "accepted (pickles can run code when they are loaded)")
    head = bytes(data[:4])
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)):
        raise LoraFileError("the file is a pickle or a zip archive (as PyTorch's .ckpt/.pt/.bin are), not "
                            "safetensors; only .safetensors LoRAs are accepted (pickles can run code)")
    if name and not name.endswith(".safetensors"):
        raise LoraFileError(f"{Path(filename).name}: only .safetensors LoRA files are accepted")


def read_header(data: bytes, *, what: str = "the file") -> tuple[dict, dict[str, str], int]:
    """(tensors, metadata, data_start) of a safetensors file's bytes: tensors maps each name to
    {"dtype", "shape", "data_offsets"}, all checked (sizes, offsets within the file)."""
    if len(data) < 8:
        raise LoraFileError(f"{what} is not a safetensors file (too short: {len(data)} bytes)")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > MAX_HEADER_BYTES:
        raise LoraFileError(f"{what} is not a usable safetensors file: its header claims {length} bytes "
                            f"(at most {MAX_HEADER_BYTES} are read)")
    if 8 + length > len(data):
        raise LoraFileError(f"{what} is truncated: its header claims {length} bytes, the file has "
                            f"{len(data) - 8} after the length")
    raw = bytes(data[8 : 8 + length])
    if not raw.lstrip().startswith(b"{"):
        raise LoraFileError(f"{what} is not a safetensors file (no JSON header)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoraFileError(f"{what} has a malformed safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{what} has a malformed safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoraFileError(f"{what} has malformed safetensors metadata (it must map names to strings)")
    if len(header) > MAX_TENSORS:
        raise LoraFileError(f"{what} holds {len(header)} tensors; a LoRA has at most {MAX_TENSORS}")
    data_start = 8 + length
    available = len(data) - data_start
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (dtype in _DTYPE_SIZES and isinstance(shape, list)
                  and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise LoraFileError(f"{what} has a malformed safetensors header (tensor {name[:120]!r})")
        if end > available:
            raise LoraFileError(f"{what} is truncated: tensor {name[:120]!r} ends at byte {end} of "
                                f"{available} bytes of data")
        if end - begin != math.prod(shape) * _DTYPE_SIZES[dtype]:
            raise LoraFileError(f"{what} has a malformed safetensors header (tensor {name[:120]!r}: its "
                                "size does not match its shape)")
    return header, metadata, data_start


def _scalar(data: bytes, data_start: int, info: dict) -> float | None:
    fmt = _SCALAR_FORMATS.get(info["dtype"])
    begin, end = info["data_offsets"]
    if math.prod(info["shape"]) != 1:
        return None
    raw = bytes(data[data_start + begin : data_start + end])
    if info["dtype"] == "BF16":
        (value,) = struct.unpack("<f", b"\x00\x00" + raw)
    elif fmt is None:
        return None
    else:
        (value,) = struct.unpack(fmt, raw)
    return float(value)


# -- key layouts -----------------------------------------------------------------------------------

_KOHYA_PREFIXES = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                   "lora_te2": "text_encoder_2"}
_KOHYA = re.compile(
    r"^(lora_unet|lora_te1|lora_te2|lora_te)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_KOHYA_ANY = re.compile(r"^(lora_unet|lora_te1|lora_te2|lora_te)_[^.]+\.(.+)$")
_PEFT_SUFFIX = re.compile(r"^(.+)\.(lora_A|lora_B)(?:\.[A-Za-z0-9_\-]+)?\.weight$")
_OLD_DIFFUSERS = re.compile(r"^(.+)\.lora\.(down|up)\.weight$")
_ATTN_PROCESSOR = re.compile(r"^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_UNSUPPORTED = re.compile(r"\.(hada_\w+|lokr_\w+|lora_mid\.weight|dora_scale|lora_magnitude_vector(\.\w+)*|"
                          r"diff|diff_b|oft_\w+|w_norm|b_norm|lora_B\.bias|lora\.up\.bias)$")

# Names whose parts contain '_': read back from kohya's underscore form greedily, longest first.
_MULTIWORD = {
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out",
    "time_embedding", "linear_1", "linear_2", "add_embedding", "input_blocks", "output_blocks",
    "middle_block", "emb_layers", "in_layers", "out_layers", "skip_connection", "time_embed",
    "label_emb", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "layer_norm1",
    "layer_norm2", "final_layer_norm", "token_embedding", "position_embedding", "add_k_proj",
    "add_v_proj", "to_add_out", "text_projection",
}
_MAX_WORDS = max(name.count("_") + 1 for name in _MULTIWORD)


def dotted_from_kohya(name: str) -> str:
    """Best guess at a module path from kohya's underscore form ("down_blocks_1_attentions_0_
    transformer_blocks_0_attn1_to_q" -> "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q").
    With a model at hand, inspect_lora maps names exactly instead."""
    parts, out, i = name.split("_"), [], 0
    while i < len(parts):
        for width in range(min(_MAX_WORDS, len(parts) - i), 1, -1):
            candidate = "_".join(parts[i : i + width])
            if candidate in _MULTIWORD:
                out.append(candidate)
                i += width
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def _strip_text_model(name: str) -> str:
    for prefix in ("text_model.", "text_model_"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _is_text_encoder_name(name: str) -> bool:
    return name.startswith(("text_model.", "encoder.layers.", "text_projection"))


def _split_key(key: str) -> tuple[str, str, str, str] | None:
    """(format, component, module, part) of a key, part "down" | "up" | "alpha"; None if it is not
    a LoRA key at all. Raises LoraFileError for known LoRA variants we cannot apply."""
    match = _KOHYA.match(key)
    if match:
        prefix, module, suffix = match.groups()
        part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}[suffix]
        component = _KOHYA_PREFIXES[prefix]
        return "kohya", component, module, part
    if _UNSUPPORTED.search(key):
        raise LoraFileError(f"the file holds {key[:120]!r}: LyCORIS variants (LoHa, LoKr, LoCon's mid "
                            "weights, DoRA, OFT) are not supported, only plain LoRA")
    if _KOHYA_ANY.match(key):
        return None  # some other per-module tensor of a kohya file (e.g. a bias): not a LoRA key
    component, rest, fmt = "", key, "peft"
    for candidate in ("text_encoder_2.", "text_encoder.", "unet."):
        if key.startswith(candidate):
            component, rest, fmt = candidate[:-1], key[len(candidate) :], "diffusers"
            break
    if rest.startswith("base_model.model."):
        rest = rest[len("base_model.model.") :]
    match = _PEFT_SUFFIX.match(rest)
    if match:
        module, part = match.group(1), "down" if match.group(2) == "lora_A" else "up"
    else:
        match = _ATTN_PROCESSOR.match(rest) or None
        if match:
            module = f"{match.group(1)}.{match.group(2)}" + (".0" if match.group(2) == "to_out" else "")
            part, fmt = match.group(3), "diffusers"
        else:
            match = _OLD_DIFFUSERS.match(rest)
            if not match:
                return None
            module, part, fmt = match.group(1), match.group(2), "diffusers"
    if not component:
        component = "text_encoder" if _is_text_encoder_name(module) else "unet"
    return fmt, component, module, part


def _diffusers_alphas(metadata: Mapping[str, str]) -> dict[str, float]:
    """Per-component lora_alpha from diffusers' ``lora_adapter_metadata`` (component "" = any)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    alphas = {}
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            if key.endswith("lora_alpha") and isinstance(value, (int, float)) and value > 0:
                alphas[key[: -len("lora_alpha")].rstrip(".")] = float(value)
    return alphas


def _family_from_metadata(metadata: Mapping[str, str]) -> str:
    version = (metadata.get("ss_base_model_version") or "").lower()
    architecture = (metadata.get("modelspec.architecture") or "").lower()
    if version.startswith("sdxl") or "-xl-" in architecture:
        return "sdxl"
    if version.startswith("sd_v2") or architecture.startswith("stable-diffusion-v2"):
        return "sd2"
    if version.startswith("sd_v1") or architecture.startswith("stable-diffusion-v1"):
        return "sd1"
    return ""


def _family_guess(modules: list[LoraModule], metadata: Mapping[str, str]) -> str:
    if any(m.component == "text_encoder_2" for m in modules) or any(
            m.component == "unet" and m.name.startswith(("input_blocks", "middle_block", "output_blocks"))
            for m in modules):
        return "sdxl"
    for module in modules:  # the cross-attention context width
        if module.component == "unet" and module.name.endswith(("attn2.to_k", "attn2.to_v")):
            width = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(module.down_shape[1], "")
            return width or _family_from_metadata(metadata)
    for module in modules:
        if module.component == "text_encoder" and module.name.endswith("self_attn.q_proj"):
            return {768: "sd1", 1024: "sd2"}.get(module.down_shape[1], "") or _family_from_metadata(metadata)
    return _family_from_metadata(metadata)


def _parse(data: bytes, filename: str) -> tuple[str, list[LoraModule], dict[str, str], int]:
    _refuse_pickle(data, filename)
    header, metadata, data_start = read_header(data)
    parts: dict[tuple[str, str], dict[str, str]] = {}
    formats = Counter()
    for key in header:
        split = _split_key(key)
        if split is None:
            continue
        fmt, component, module, part = split
        formats[fmt] += 1
        slot = parts.setdefault((component, module), {})
        if part in slot:
            raise LoraFileError(f"the file holds two {part} weights for {component} module {module}")
        slot[part] = key
    if not parts:
        raise LoraFileError("the file holds no LoRA weights (no lora_down/lora_up, lora_A/lora_B keys): "
                            "it is not a LoRA, or of a kind we do not know")
    if len(formats) > 1:
        raise LoraFileError(f"the file mixes LoRA key layouts ({', '.join(sorted(formats))})")
    fmt = next(iter(formats))
    file_alphas = _diffusers_alphas(metadata)
    modules = []
    for (component, raw_name), slot in sorted(parts.items()):
        label = f"{component} module {raw_name}"
        if "down" not in slot or "up" not in slot:
            missing = "down (A)" if "down" not in slot else "up (B)"
            raise LoraFileError(f"the file is incomplete: {label} has no {missing} weight")
        down, up = header[slot["down"]]["shape"], header[slot["up"]]["shape"]
        if (len(down) not in (2, 4) or len(up) != len(down) or down[0] != up[1] or down[0] == 0
                or (len(up) == 4 and tuple(up[2:]) != (1, 1))):
            raise LoraFileError(f"the file is malformed: {label} has weights of shapes {down} and {up}, "
                                "which do not multiply")
        rank = down[0]
        alpha = None
        if "alpha" in slot:
            alpha = _scalar(data, data_start, header[slot["alpha"]])
            if alpha is None or not math.isfinite(alpha):
                raise LoraFileError(f"the file is malformed: the alpha of {label} is not one number")
        elif fmt != "kohya":
            alpha = file_alphas.get(component, file_alphas.get(""))
        name = raw_name
        if fmt == "kohya":
            name = dotted_from_kohya(raw_name)
        if component.startswith("text_encoder"):
            name = _strip_text_model(name)
        modules.append(LoraModule(component=component, name=name, down_key=slot["down"], up_key=slot["up"],
                                  alpha_key=slot.get("alpha", ""), rank=rank,
                                  alpha=float(rank if alpha is None else alpha),
                                  down_shape=tuple(down), up_shape=tuple(up)))
    return fmt, modules, metadata, len(header)


# -- fitting a model -------------------------------------------------------------------------------


def _component_files(folder: Path) -> list[Path]:
    """The safetensors weight files of one component folder (sharded, fp16 variant or plain)."""
    if not folder.is_dir():
        return []
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if ".fp16." not in f.name and not f.name.startswith("preview")]
    return plain[:1] or files[:1]


def _read_file_header(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LoraFileError(f"the model's {path.name} is not a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 64 * 1024 * 1024:
            raise LoraFileError(f"the model's {path.name} has an implausible header")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError:
        raise LoraFileError(f"the model's {path.name} has a malformed header") from None
    header.pop("__metadata__", None)
    return header


_MODEL_CACHE: dict[tuple, dict[str, dict[str, tuple[int, ...]]]] = {}


def model_modules(model_path: str | Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """component -> {module path: weight shape} of a diffusers model folder, from the headers of
    its safetensors files alone (text encoder paths without ``text_model.``). Cached per file set."""
    root = Path(model_path)
    files = {component: _component_files(root / component) for component in COMPONENTS}
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for fs in files.values() for f in fs)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if not files["unet"]:
        raise LoraFileError(f"cannot check the LoRA against {root}: it has no unet/*.safetensors "
                            "(a diffusers model folder with safetensors weights is needed)")
    result: dict[str, dict[str, tuple[int, ...]]] = {}
    for component, paths in files.items():
        shapes = {}
        for path in paths:
            for name, info in _read_file_header(path).items():
                if name.endswith(".weight") and isinstance(info, dict):
                    module = name[: -len(".weight")]
                    if component.startswith("text_encoder"):
                        module = _strip_text_model(module)
                    shapes[module] = tuple(info.get("shape", ()))
        if shapes:
            result[component] = shapes
    _MODEL_CACHE[key] = result
    return result


def _model_label(model_path: str | Path) -> tuple[str, str]:
    try:
        from .model_info import read_model_info

        info = read_model_info(model_path)
        return info.name, info.family
    except Exception:  # noqa: BLE001 - only for the message
        return Path(model_path).name, ""


def _fits(module: LoraModule, shape: tuple[int, ...]) -> str:
    """"" when the LoRA's weights fit a module weight of that shape, else what is wrong."""
    down, up = module.down_shape, module.up_shape
    if len(shape) not in (2, 4):
        return f"the model's {module.name} is not a linear or convolution layer"
    if up[0] != shape[0]:
        return f"{module.name}: the LoRA has {up[0]} outputs, the model {shape[0]}"
    if down[1] != shape[1]:
        return f"{module.name}: the LoRA expects {down[1]} inputs, the model has {shape[1]}"
    if len(shape) == 4:
        kernel, lora_kernel = tuple(shape[2:]), tuple(down[2:]) if len(down) == 4 else (1, 1)
        if lora_kernel not in ((1, 1), kernel) or (lora_kernel == (1, 1) and kernel != (1, 1)
                                                   and len(down) == 2):
            return f"{module.name}: the LoRA's kernel {lora_kernel} does not fit the model's {kernel}"
    elif len(down) == 4 and tuple(down[2:]) != (1, 1):
        return f"{module.name}: a convolution LoRA on the model's linear layer"
    return ""


def _fit(modules: list[LoraModule], fmt: str, family_guess: str, model_path: str | Path) -> list[LoraModule]:
    model = model_modules(model_path)
    lookups: dict[str, dict[str, str]] = {}
    for component, shapes in model.items():
        lookups[component] = {name.replace(".", "_"): name for name in shapes} if fmt == "kohya" else \
            {name: name for name in shapes}
    missing, misfits, mapped = [], [], []
    for module in modules:
        raw = module.name
        if fmt == "kohya":  # the exact underscore name the file holds
            raw = _split_key(module.down_key)[2]
            if module.component.startswith("text_encoder"):
                raw = _strip_text_model(raw)
        target = lookups.get(module.component, {}).get(raw)
        if target is None:
            missing.append(module)
            continue
        problem = _fits(module, model[module.component][target])
        if problem:
            misfits.append(problem)
            continue
        mapped.append(_replace(module, model_module=target))
    if missing or misfits:
        name, family = _model_label(model_path)
        model_text = f"the model {name}" + (f" ({family})" if family and family != name else "")
        looks = ""
        if family_guess and family_guess != family:
            looks = f"; it looks like an {'SDXL' if family_guess == 'sdxl' else family_guess} LoRA"
        problems = []
        if missing:
            example = missing[0].down_key.rsplit(".lora", 1)[0]
            verb = "is" if len(missing) == 1 else "are"
            problems.append(f"{len(missing)} of its {len(modules)} modules {verb} not in the model "
                            f"(e.g. {example})")
        if misfits:
            verb = "has" if len(misfits) == 1 else "have"
            problems.append(f"{len(misfits)} of its {len(modules)} modules {verb} other shapes than the "
                            f"model's ({misfits[0]})")
        raise LoraFileError(f"this LoRA does not fit {model_text}: {'; '.join(problems)}{looks}")
    return mapped


def _replace(module: LoraModule, **changes) -> LoraModule:
    from dataclasses import replace

    return replace(module, **changes)


def inspect_lora(data: bytes, *, filename: str = "", model_path: str | Path | None = None) -> LoraSummary:
    """What a LoRA file holds, from its safetensors header; raises LoraFileError (an engine
    InvalidRequest, field "lora") with a clear message for anything we cannot or must not load.

    With ``model_path`` (a diffusers model folder), every module must exist in that model with
    matching shapes; the summary's modules then carry ``model_module``.
    """
    fmt, modules, metadata, count = _parse(data, filename)
    guess = _family_guess(modules, metadata)
    model_name = ""
    if model_path is not None:
        modules = _fit(modules, fmt, guess, model_path)
        model_name = _model_label(model_path)[0]
    alphas = Counter(m.alpha for m in modules)
    unet = tuple(m.name for m in modules if m.component == "unet")
    text = tuple(m.name if m.component == "text_encoder" else f"{m.component}:{m.name}"
                 for m in modules if m.component != "unet")
    return LoraSummary(format=fmt, rank=max(m.rank for m in modules), alpha=alphas.most_common(1)[0][0],
                       unet_modules=unet, text_encoder_modules=text, base_family_guess=guess,
                       metadata=dict(metadata), modules=tuple(modules), tensor_count=count,
                       model_name=model_name)


# -- writing the kohya format ----------------------------------------------------------------------

KOHYA_BASE_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_MODELSPEC_ARCHITECTURES = {"sd_v1": "stable-diffusion-v1/lora", "sd_v2": "stable-diffusion-v2-512/lora",
                            "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora"}
WRITER = "studio kohya_from_peft 1"


def _peft_module(key: str) -> tuple[str, str]:
    rest = key
    for prefix in ("unet.", "text_encoder.", "base_model.model."):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
    match = _PEFT_SUFFIX.match(rest)
    if not match:
        raise ValueError(f"{key!r} is not a PEFT LoRA key (<module>.lora_A.weight / .lora_B.weight)")
    return match.group(1), "down" if match.group(2) == "lora_A" else "up"


def _metadata_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def safetensors_data_sha256(data: bytes) -> str:
    """sha256 of the tensor data (everything after the header): kohya's ``sshs_model_hash``."""
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length :]).hexdigest()


def kohya_from_peft(unet_state: Mapping, text_encoder_state: Mapping | None = None, *, alpha: float,
                    metadata: Mapping[str, object] | None = None) -> bytes:
    """The bytes of a kohya/A1111 `.safetensors` LoRA from PEFT state dicts of the UNet and the
    (first) text encoder (``get_peft_model_state_dict`` output: ``<module>.lora_A.weight`` /
    ``.lora_B.weight``; a ``unet.``/``text_encoder.``/``base_model.model.`` prefix is dropped).

    Every module gets ``alpha`` (PEFT's lora_alpha). Metadata: kohya's ``ss_*`` fields
    (ss_network_module, ss_network_dim, ss_network_alpha, ss_base_model_version, ss_v2, and
    sshs_model_hash / sshs_legacy_hash computed as sd-scripts does), sai ``modelspec.*``, then
    ``metadata`` (values that are not strings are written as JSON/str; pass
    ``ss_base_model_version`` or ``studio_base_family`` "sd1"/"sd2"/"sdxl", default sd_v1).
    """
    import torch
    from safetensors.torch import save

    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, not {alpha!r}")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for prefix, state in (("lora_unet_", unet_state), ("lora_te_text_model_", text_encoder_state or {})):
        found: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            module, part = _peft_module(key)
            if prefix.startswith("lora_te"):
                module = _strip_text_model(module)
            found.setdefault(module, {})[part] = tensor
        for module, parts in found.items():
            if set(parts) != {"down", "up"}:
                raise ValueError(f"{module}: a LoRA module needs both lora_A and lora_B weights")
            down, up = (parts[p].detach().to("cpu").contiguous() for p in ("down", "up"))
            if down.shape[0] != up.shape[1]:
                raise ValueError(f"{module}: lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)} "
                                 "do not multiply")
            name = prefix + module.replace(".", "_")
            tensors[f"{name}.lora_down.weight"] = down
            tensors[f"{name}.lora_up.weight"] = up
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
            ranks[name] = int(down.shape[0])
    if not ranks:
        raise ValueError("no LoRA weights to write")
    extra = {key: _metadata_text(value) for key, value in (metadata or {}).items()}
    base_version = extra.get("ss_base_model_version") or KOHYA_BASE_VERSIONS.get(
        extra.get("studio_base_family", ""), "sd_v1")
    rank = Counter(ranks.values()).most_common(1)[0][0]
    header: dict[str, str] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": base_version,
        "ss_v2": str(base_version.startswith("sd_v2")),
        "ss_training_comment": "trained with Studio",
    }
    if any(name.startswith("lora_te") for name in ranks):
        header["ss_text_encoder_lr"] = extra.get("ss_text_encoder_lr", "")
    header.update({k: v for k, v in extra.items() if k.startswith("ss_")})
    header = {k: v for k, v in header.items() if v != ""}
    # sd-scripts hashes the file saved with its ss_ metadata alone: the data's sha256 ("model
    # hash", what the Additional Networks extension shows) and 64 KiB at 1 MiB ("legacy hash").
    first = save(tensors, metadata=header)
    header["sshs_model_hash"] = safetensors_data_sha256(first)
    header["sshs_legacy_hash"] = hashlib.sha256(first[0x100000 : 0x110000]).hexdigest()[:8]
    header.update({
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": _MODELSPEC_ARCHITECTURES.get(base_version, f"{base_version}/lora"),
        "modelspec.implementation": "diffusers",
        "modelspec.title": extra.get("ss_output_name") or extra.get("studio_name") or "studio-lora",
    })
    header.update({
        "studio_writer": WRITER,
        "studio_rank": str(rank),
        "studio_alpha": str(float(alpha)),
        "studio_unet_modules": str(sum(1 for n in ranks if n.startswith("lora_unet_"))),
        "studio_text_encoder_modules": str(sum(1 for n in ranks if n.startswith("lora_te"))),
    })
    header.update({k: v for k, v in extra.items() if not k.startswith("ss_")})
    return save(tensors, metadata=header)
