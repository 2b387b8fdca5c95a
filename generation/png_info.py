"""PNG info: the Create form's fields from the generation parameters a PNG carries.

Three dialects are read from the PNG's text chunks (generation.services.uploads reads them from the
file as it was sent): ours and AUTOMATIC1111's "parameters" chunk (the same infotext format), and
ComfyUI's "prompt" chunk (its API-format node graph as JSON: the prompts, steps, CFG, sampler and
seed of a KSampler node, the size of its EmptyLatentImage). Every value is checked against the
same rules as a request (generation.engine.contracts); what cannot be used is listed with why.
Pure functions: no database, no request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from generation.engine.contracts import (
    MAX_SEED,
    SAMPLERS,
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    validate_request,
)
from generation.engine.contracts import InvalidRequest
from generation.engine.infotext import LORA_HASHES_KEY, parse_infotext, parse_lora_hashes, request_fields_from_infotext
from generation.engine.prompt_tags import lora_tags
from generation.forms import ASPECT_RATIOS, size_for_aspect

A1111 = "AUTOMATIC1111 / Studio parameters"
COMFYUI = "ComfyUI workflow"

_LABEL_TO_SAMPLER = {label: key for key, label in SAMPLERS.items()}
# A1111's keys that fill a Create field (Schedule type joins the sampler, Model is compared).
_A1111_USED = {"Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size"}
_CANVAS_KEYS = {"Denoising strength", "Mask blur", "Masked content", "Inpaint area", "Only masked padding, pixels"}
# ComfyUI's sampler names (comfy/samplers.py KSAMPLER_NAMES) that we have, and its schedulers that
# mean "the sampler's own schedule" (karras picks the Karras variant where there is one).
_COMFY_SAMPLERS = {"euler": "euler", "euler_ancestral": "euler_a", "dpmpp_2m": "dpmpp_2m", "ddim": "ddim",
                   "uni_pc": "unipc", "uni_pc_bh2": "unipc"}
_COMFY_PLAIN_SCHEDULERS = {"normal", "simple", "sgm_uniform", "ddim_uniform"}
_MAX_HOPS = 12  # links followed from one input through a ComfyUI graph
# parse_infotext's "Key: value" pattern takes quadratic time on a long last line without colons
# (0.3 s at 4096 characters, half a minute at 32 KB): longer parameters are not read.
MAX_PARAMETER_LINE = 4096
MAX_INFOTEXT = 64 * 1024


@dataclass(frozen=True)
class Unused:
    label: str
    value: str
    reason: str


@dataclass
class PngInfo:
    source: str = ""  # A1111 or COMFYUI; "" when the PNG carries no parameters we know
    fields: dict[str, object] = field(default_factory=dict)  # Create form field -> value
    used: list[tuple[str, str]] = field(default_factory=list)  # (label, value) as shown
    unused: list[Unused] = field(default_factory=list)
    # The model the picture names: (name, hash, as shown); and the offered model it matched, if any.
    model_ref: tuple[str, str, str] = ("", "", "")
    model_info: ModelInfo | None = None

    @property
    def found(self) -> bool:
        return bool(self.fields)

    def form_values(self, info: ModelInfo) -> dict[str, object]:
        """What the Create form gets: the size as an aspect ratio when one of the model's gives
        exactly that size, else as width and height (and no aspect ratio)."""
        values = {key: value for key, value in self.fields.items() if key not in ("width", "height")}
        if "width" in self.fields:
            size = (self.fields["width"], self.fields["height"])
            aspect = next((key for key in ASPECT_RATIOS if size_for_aspect(key, info) == size), None)
            if aspect:
                values.update(aspect=aspect, width=None, height=None)
            else:
                values.update(width=size[0], height=size[1])
        return values


def png_info_from_text(text: dict[str, str], info: ModelInfo, loras=None, models=None) -> PngInfo:
    """Read a PNG's text chunks (keyword -> text). `loras`: the LoRAs the user may use
    (forms.usable_loras), against which the prompt's <lora:name:w> tags are checked. `models`: the
    models the user may pick (selectors.models_offered): the picture's model, when one of them,
    fills the picker (`model`) and its limits check the other values; `info` is the form's model."""
    if text.get("parameters", "").strip():
        result = _from_infotext(text["parameters"], info)
    elif text.get("prompt", "").strip():
        result = _from_comfyui(text["prompt"], info)
    else:
        return PngInfo()
    info = _resolve_model(result, info, models or [])
    _check(result, info)
    if loras is not None:
        _check_loras(result, text.get("parameters", ""), loras)
    return result


def _check_loras(result: PngInfo, infotext: str, loras) -> None:
    """The prompt keeps its <lora:name:w> tags (Create resolves them by name when it is posted);
    a tag naming no LoRA of mine is listed here as unusable, and one whose file differs from the
    picture's ("Lora hashes") is named too, so neither surprises anyone on Create."""
    try:
        tags = lora_tags(str(result.fields.get("prompt", "")))
    except InvalidRequest:
        return
    hashes = parse_lora_hashes(parse_infotext(infotext).get(LORA_HASHES_KEY, "")) if infotext else {}
    if hashes and set(hashes) <= {tag.name for tag in tags}:  # read with the tags (else it stays listed)
        result.unused = [item for item in result.unused if item.label != LORA_HASHES_KEY]
    for tag in tags:
        same = [lora for lora in loras if lora.name == tag.name]
        if not same:
            result.unused.append(Unused("LoRA", tag.text, f"you have no LoRA called {tag.name}: remove the tag or "
                                                          f"import the LoRA before generating"))
        elif tag.name in hashes and all(not lora.sha256.startswith(hashes[tag.name].lower()) for lora in same):
            result.unused.append(Unused("LoRA", tag.text, f"your LoRA {tag.name} is another file than the picture's "
                                                          f"(hash {hashes[tag.name]}): yours will be used"))
        else:
            result.used.append(("LoRA", f"{tag.name} ({tag.weight:g})"))


# -- AUTOMATIC1111 and ours ------------------------------------------------------------------------


def _from_infotext(infotext: str, info: ModelInfo) -> PngInfo:
    result = PngInfo(source=A1111)
    last_line = infotext.replace("\r\n", "\n").rsplit("\n", 1)[-1]
    if len(infotext) > MAX_INFOTEXT or len(last_line) > MAX_PARAMETER_LINE:
        result.unused.append(Unused("parameters", f"{len(infotext):,} characters", "too long to read"))
        return result
    parsed = parse_infotext(infotext)
    typed = request_fields_from_infotext(infotext)
    for name in ("prompt", "negative_prompt", "steps", "guidance_scale", "seed", "width", "height"):
        if name in typed:
            result.fields[name] = typed[name]
    for key, name in (("Steps", "steps"), ("CFG scale", "guidance_scale"), ("Seed", "seed"), ("Size", "width")):
        if key in parsed and name not in typed:
            result.unused.append(Unused(key, parsed[key], "not a number we can read"))
    _a1111_sampler(parsed, result)
    name, model_hash = parsed.get("Model", ""), parsed.get("Model hash", "")
    result.model_ref = (name, model_hash, " ".join(filter(None, (name, model_hash and f"({model_hash})"))))
    for key, value in parsed.items():
        if key in _A1111_USED:
            continue
        if key in ("Model", "Model hash"):
            continue
        reason = "a canvas setting: not used on Create" if key in _CANVAS_KEYS else "not a setting of Create"
        result.unused.append(Unused(key, value, reason))
    return result


def _names_model(name: str, model_hash: str, info: ModelInfo, *names: str) -> bool:
    """Whether a picture's (Model, Model hash) is this model: by hash when it has one, else by name."""
    if model_hash:
        return model_hash.lower() == info.hash.lower()
    return name in (info.name, *names)


def _resolve_model(result: PngInfo, info: ModelInfo, models) -> ModelInfo:
    """The picture's model: one of `models` fills the picker; the form's own model (`info`) needs
    nothing; any other is listed as not used. Returns the model the values are checked against."""
    name, model_hash, shown = result.model_ref
    if not (name or model_hash):
        return info
    match = next((model for model in models
                  if _names_model(name, model_hash, model.model_info(), model.name, model.title)), None)
    if match is not None:
        result.model_info = match.model_info()
        if not _names_model(name, model_hash, info) or len(models) > 1:
            result.fields["model"] = match.name
            result.used.append(("Model", match.title))
        return result.model_info
    if not _names_model(name, model_hash, info):
        result.unused.append(Unused("Model", shown, f"this studio generates with its model “{info.name}”"))
    return info


def _a1111_sampler(parsed: dict[str, str], result: PngInfo) -> None:
    """A1111 >= 1.9 writes the schedule apart ("Sampler: DPM++ 2M, Schedule type: Karras")."""
    label = parsed.get("Sampler", "")
    schedule = parsed.get("Schedule type", "")
    if not label:
        return
    if schedule == "Karras" and not label.endswith(" Karras"):
        if f"{label} Karras" in _LABEL_TO_SAMPLER:
            result.fields["sampler"] = _LABEL_TO_SAMPLER[f"{label} Karras"]
            return
        result.unused.append(Unused("Schedule type", schedule, f"{label} has no Karras schedule here"))
    elif schedule not in ("", "Automatic", "Karras"):
        result.unused.append(Unused("Schedule type", schedule, "not available here"))
    if label in _LABEL_TO_SAMPLER:
        result.fields["sampler"] = _LABEL_TO_SAMPLER[label]
    else:
        result.unused.append(Unused("Sampler", label, f"not available here (we have {', '.join(SAMPLERS.values())})"))


# -- ComfyUI ---------------------------------------------------------------------------------------


def _from_comfyui(prompt_json: str, info: ModelInfo) -> PngInfo:
    result = PngInfo(source=COMFYUI)
    try:
        graph = json.loads(prompt_json)
    except (ValueError, RecursionError):
        result.unused.append(Unused("prompt", _short(prompt_json), "not a ComfyUI graph we can read"))
        return result
    if not isinstance(graph, dict):
        result.unused.append(Unused("prompt", _short(prompt_json), "not a ComfyUI graph we can read"))
        return result
    nodes = {str(key): node for key, node in graph.items() if isinstance(node, dict)}
    sampler = _main_sampler(nodes)
    if sampler is None:
        result.unused.append(Unused("prompt", _short(prompt_json), "the workflow has no KSampler node"))
        return result
    inputs = _inputs(sampler)
    for name, key in (("prompt", "positive"), ("negative_prompt", "negative")):
        text = _conditioning_text(nodes, inputs.get(key))
        if text is not None:
            result.fields[name] = text
    _comfy_number(nodes, inputs, ("steps",), "steps", "Steps", int, result)
    _comfy_number(nodes, inputs, ("cfg",), "guidance_scale", "CFG scale", float, result)
    _comfy_number(nodes, inputs, ("seed", "noise_seed"), "seed", "Seed", int, result)
    _comfy_sampler(nodes, inputs, result)
    _comfy_size(nodes, inputs.get("latent_image"), result)
    denoise = _value(nodes, inputs.get("denoise"), ("denoise", "value"))
    if isinstance(denoise, (int, float)) and not isinstance(denoise, bool) and denoise < 1:
        result.unused.append(Unused("Denoise", f"{denoise:g}", "image to image: open the image in the canvas"))
    checkpoint = next((_inputs(node).get("ckpt_name") for node in nodes.values()
                       if node.get("class_type") == "CheckpointLoaderSimple"), None)
    if isinstance(checkpoint, str):
        result.model_ref = (checkpoint.rsplit(".", 1)[0], "", checkpoint)
    return result


def _main_sampler(nodes: dict[str, dict]) -> dict | None:
    """The KSampler that starts from an empty latent (a hires-fix second pass does not), else the first."""
    samplers = [nodes[key] for key in sorted(nodes, key=_node_order)
                if nodes[key].get("class_type") in ("KSampler", "KSamplerAdvanced")]
    for sampler in samplers:
        latent = _follow(nodes, _inputs(sampler).get("latent_image"))
        if latent is not None and str(latent.get("class_type", "")).startswith("Empty"):
            return sampler
    return samplers[0] if samplers else None


def _node_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (10**12, key)


def _inputs(node: dict) -> dict:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _follow(nodes: dict[str, dict], link) -> dict | None:
    """The node a link ([node id, output index]) points at."""
    if isinstance(link, list) and len(link) == 2 and isinstance(link[0], (str, int)):
        node = nodes.get(str(link[0]))
        return node if isinstance(node, dict) else None
    return None


def _value(nodes: dict[str, dict], value, keys: tuple[str, ...], hops: int = 0):
    """A literal input, or the literal a chain of links ends at (a primitive node's "value")."""
    if hops > _MAX_HOPS:
        return None
    node = _follow(nodes, value)
    if node is None:
        return None if isinstance(value, list) else value
    inputs = _inputs(node)
    for key in (*keys, "value", "text", "string", "seed", "int", "float"):
        if key in inputs:
            return _value(nodes, inputs[key], keys, hops + 1)
    return None


def _conditioning_text(nodes: dict[str, dict], link, hops: int = 0) -> str | None:
    """The prompt of a conditioning input: a CLIPTextEncode's text, through any conditioning node
    (ControlNet, combine, ...) between it and the sampler."""
    node = _follow(nodes, link)
    if node is None or hops > _MAX_HOPS:
        return None
    inputs = _inputs(node)
    for key in ("text", "text_g", "prompt"):
        if key in inputs:
            text = _value(nodes, inputs[key], ("text", "string", "value"))
            return text if isinstance(text, str) else None
    for key in ("conditioning", "conditioning_1", "conditioning_to", "positive"):
        if key in inputs:
            return _conditioning_text(nodes, inputs[key], hops + 1)
    return None


def _comfy_number(nodes, inputs: dict, keys: tuple[str, ...], name: str, label: str, kind, result: PngInfo) -> None:
    key = next((key for key in keys if key in inputs), None)
    if key is None:
        return
    value = _value(nodes, inputs[key], keys)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        result.unused.append(Unused(label, _short(json.dumps(value)), "not a number we can read"))
        return
    result.fields[name] = kind(value)


def _comfy_sampler(nodes, inputs: dict, result: PngInfo) -> None:
    name = _value(nodes, inputs.get("sampler_name"), ("sampler_name",))
    scheduler = _value(nodes, inputs.get("scheduler"), ("scheduler",))
    if not isinstance(name, str):
        return
    key = _COMFY_SAMPLERS.get(name)
    if key is None:
        result.unused.append(Unused("Sampler", name, f"not available here (we have {', '.join(SAMPLERS.values())})"))
        return
    if scheduler == "karras":
        if f"{key}_karras" in SAMPLERS:
            key = f"{key}_karras"
        else:
            result.unused.append(Unused("Scheduler", scheduler, f"{SAMPLERS[key]} has no Karras schedule here"))
    elif isinstance(scheduler, str) and scheduler not in _COMFY_PLAIN_SCHEDULERS:
        result.unused.append(Unused("Scheduler", scheduler, "not available here"))
    result.fields["sampler"] = key


def _comfy_size(nodes, link, result: PngInfo) -> None:
    latent = _follow(nodes, link)
    if latent is None:
        return
    inputs = _inputs(latent)
    width, height = (_value(nodes, inputs.get(key), (key,)) for key in ("width", "height"))
    if all(isinstance(side, int) and not isinstance(side, bool) for side in (width, height)):
        result.fields["width"], result.fields["height"] = width, height
    elif not str(latent.get("class_type", "")).startswith("Empty"):
        result.unused.append(Unused("Size", str(latent.get("class_type", "")),
                                    "the sampler starts from an image: open it in the canvas"))


# -- checks against the model ----------------------------------------------------------------------

_LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "steps": "Steps",
           "guidance_scale": "CFG scale", "sampler": "Sampler", "seed": "Seed", "width": "Size"}


def _check(result: PngInfo, info: ModelInfo) -> None:
    """Each field checked alone against a request that is otherwise the model's defaults: a value
    the form would refuse moves to `unused` with the rule's own words."""
    base = {"prompt": "x", "width": info.native_width, "height": info.native_height, "steps": info.default_steps,
            "guidance_scale": info.default_guidance_scale, "sampler": info.default_sampler}
    for name in ("prompt", "negative_prompt", "steps", "guidance_scale", "sampler", "seed", "width"):
        if name not in result.fields:
            continue
        trial = {name: result.fields[name]}
        if name == "width":
            trial["height"] = result.fields["height"]
        shown = _shown(name, result.fields)
        try:
            if name == "seed" and not 0 <= result.fields["seed"] <= MAX_SEED:
                raise InvalidRequest("seed", f"must be a whole number from 0 to {MAX_SEED}")
            validate_request(GenerationRequest(**{**base, **trial}), info)
        except InvalidRequest as error:
            for key in trial:
                result.fields.pop(key)
            result.unused.append(Unused(_LABELS[name], shown, f"{error.field.replace('_', ' ')} {error.message}"))
            continue
        result.used.append((_LABELS[name], shown))


def _shown(name: str, fields: dict[str, object]) -> str:
    value = fields[name]
    if name == "sampler":
        return SAMPLERS.get(str(value), str(value))
    if name == "width":
        return f"{fields['width']}×{fields['height']}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
