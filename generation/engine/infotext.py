"""A1111-compatible generation parameters ("infotext"): format and parse.

Torch-free and Pillow-free: the web process uses it to show and reuse parameters.

Format (the negative line is left out when empty, the prompt line when the prompt is empty)::

    {prompt}
    Negative prompt: {negative}
    Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 123, Size: 512x512, Model hash: abcdef1234, Model: demo

Known limitation shared with A1111: a prompt that contains a line starting with
"Negative prompt:", or whose last line looks like three or more "Key: value" pairs,
does not parse back to itself.
"""

from __future__ import annotations

import json
import re

from .contracts import SAMPLERS

NEGATIVE_PREFIX = "Negative prompt:"

# One "Key: value" pair; a value is either JSON-quoted or runs to the next comma (as in A1111).
# A key starts the line or follows a comma: unanchored (as in A1111), a long last line without
# pairs made the search try a key at every character, quadratic in the line's length.
_PARAM_RE = re.compile(r'(?:^|(?<=,))\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
_LABEL_TO_SAMPLER = {label: key for key, label in SAMPLERS.items()}


def quote(value: object) -> str:
    """A1111's quoting: JSON-quote a value that contains a comma, colon, newline or quote."""
    text = str(value)
    if not any(c in text for c in ',:\n"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def format_infotext(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    model_hash: str = "",
    model_name: str = "",
    extra: dict[str, object] | None = None,
) -> str:
    """Build the infotext. ``sampler`` is a key of SAMPLERS (an unknown key is written as is)."""
    params: dict[str, object] = {
        "Steps": steps,
        "Sampler": SAMPLERS.get(sampler, sampler),
        "CFG scale": float(guidance_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
    }
    if model_hash:
        params["Model hash"] = model_hash
    if model_name:
        params["Model"] = model_name
    params.update(extra or {})
    lines = []
    if prompt:
        lines.append(prompt)
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str]:
    """Parse an infotext back into a dict of strings.

    Keys: "Prompt", "Negative prompt" (always present, maybe empty) and every "Key: value" pair
    of the last line ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", ...).
    Text that has no parameter line parses as a prompt alone.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    params: dict[str, str] = {}
    last = lines[-1]
    found = _PARAM_RE.findall(last)
    if len(found) >= 3:
        params = {key.strip(): unquote(value.strip()) for key, value in found}
        lines = lines[:-1]

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if not in_negative and line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :]
            if line.startswith(" "):
                line = line[1:]
        (negative_lines if in_negative else prompt_lines).append(line)
    result = {"Prompt": "\n".join(prompt_lines), "Negative prompt": "\n".join(negative_lines)}
    result.update(params)
    return result


LORA_HASHES_KEY = "Lora hashes"


def format_lora_hashes(loras) -> str:
    """A1111's "Lora hashes" value: "name: shorthash, name2: shorthash2" (objects with ``name`` and
    ``short_hash``, e.g. LoraRef); "" for none."""
    return ", ".join(f"{lora.name}: {lora.short_hash}" for lora in loras)


def parse_lora_hashes(value: str) -> dict[str, str]:
    """{name: short hash} from a "Lora hashes" value; pairs that do not read as "name: hex" are skipped."""
    result = {}
    for part in (value or "").split(","):
        name, sep, digest = part.rpartition(":")
        name, digest = name.strip(), digest.strip().lower()
        if sep and name and re.fullmatch(r"[0-9a-f]{8,64}", digest):
            result[name] = digest
    return result


def request_fields_from_infotext(text: str) -> dict[str, object]:
    """The GenerationRequest fields an infotext describes, typed; unknown or broken values are left out.

    Lets the web offer "use these parameters again" for any A1111-style PNG. The prompt keeps its
    `<lora:name:w>` tags; when the infotext names LoRAs' hashes, "lora_hashes" is {name: short
    hash} (not a GenerationRequest field: the web maps it to its own LoRAs).
    """
    parsed = parse_infotext(text)
    fields: dict[str, object] = {"prompt": parsed["Prompt"], "negative_prompt": parsed["Negative prompt"]}
    converters = {
        "Steps": ("steps", int),
        "CFG scale": ("guidance_scale", float),
        "Seed": ("seed", int),
    }
    for key, (name, convert) in converters.items():
        if key in parsed:
            try:
                fields[name] = convert(parsed[key])
            except ValueError:
                pass
    label = parsed.get("Sampler", "")
    if parsed.get("Schedule type") == "Karras" and not label.endswith(" Karras"):  # A1111 >= 1.6 style
        label += " Karras"
    sampler = _LABEL_TO_SAMPLER.get(label)
    if sampler:
        fields["sampler"] = sampler
    size = _SIZE_RE.match(parsed.get("Size", ""))
    if size:
        fields["width"], fields["height"] = int(size.group(1)), int(size.group(2))
    hashes = parse_lora_hashes(parsed.get(LORA_HASHES_KEY, ""))
    if hashes:
        fields["lora_hashes"] = hashes
    return fields
