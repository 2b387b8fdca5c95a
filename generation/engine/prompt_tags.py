"""AUTOMATIC1111's LoRA prompt syntax: `<lora:name>`, `<lora:name:0.8>`, `<lora:name:0.8:0.6>`.

The tags stay in the prompt as written (the PNG's parameters keep them, as A1111's do, so "reuse
settings" brings the LoRAs back); the text encoder never sees them: the engine encodes
``strip_lora_tags(prompt)``. Torch-free: the Create form parses the same tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .contracts import InvalidRequest

# name, then up to two multipliers (A1111: text encoder, then UNet; we apply one weight to both,
# the first, as A1111 does when only one is given). Names cannot hold ':' '<' '>'.
_TAG = re.compile(r"<lora:([^:<>]+)((?::[^:<>]*){0,2})>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float
    text: str  # the tag as written


def _weight(tag_text: str, name: str, numbers: str) -> float:
    parts = [part for part in numbers.split(":")[1:] if part.strip()]
    if not parts:
        return 1.0
    try:
        weight = float(parts[0])
    except ValueError:
        raise InvalidRequest("prompt", f"{tag_text}: the weight of {name} is not a number") from None
    if weight != weight or weight in (float("inf"), float("-inf")):
        raise InvalidRequest("prompt", f"{tag_text}: the weight of {name} is not a number")
    return weight


def lora_tags(prompt: str) -> list[LoraTag]:
    """The tags in order of appearance. A name given twice is refused (which weight was meant?)."""
    tags, seen = [], set()
    for match in _TAG.finditer(prompt or ""):
        name = match.group(1).strip()
        if not name:
            raise InvalidRequest("prompt", f"{match.group(0)}: the LoRA has no name")
        if name in seen:
            raise InvalidRequest("prompt", f"the LoRA {name} is named twice")
        seen.add(name)
        tags.append(LoraTag(name=name, weight=_weight(match.group(0), name, match.group(2)), text=match.group(0)))
    return tags


def strip_lora_tags(prompt: str) -> str:
    """The prompt the text encoder sees: tags removed, the spaces they leave collapsed."""
    return re.sub(r" +([,.;])", r"\1", _SPACES.sub(" ", _TAG.sub("", prompt or ""))).strip()


def with_lora_tags(prompt: str, loras: list[tuple[str, float]]) -> str:
    """The prompt with a tag for each (name, weight): existing tags of those names are replaced,
    the rest appended at the end, as A1111's LoRA picker writes them."""
    wanted = dict(loras)
    kept = _TAG.sub(lambda m: "" if m.group(1).strip() in wanted else m.group(0), prompt or "")
    kept = _SPACES.sub(" ", kept).strip()
    added = " ".join(f"<lora:{name}:{weight:g}>" for name, weight in loras)
    return f"{kept} {added}".strip() if added else kept
