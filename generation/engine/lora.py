"""LoRAs on the Engine's warm pipeline, per request, without reloading the base model.

How: a request's LoRAs are merged into the weights they change ("fused"):
``W = W0 + sum(weight * alpha / rank * up @ down)`` for every module they touch, computed in
float32 from the pristine W0, which is kept aside while it is changed. The next request with
other LoRAs (or none) first gets W0 copied back, bit for bit, so nothing of one request's LoRAs
leaks into the next, and a request without LoRAs runs at exactly the base model's speed.
The same LoRAs with the same weights as the previous request cost nothing (nothing is undone).

Why not diffusers' load_lora_weights + set_adapters (PEFT layers): unfused PEFT layers add two
small matmuls per module per step for as long as they are loaded, and the wrappers cost even with
LoRAs disabled (benchmarks/lora_speed.py measures both routes); and here (diffusers 0.42,
transformers 5, PEFT 0.21) diffusers cannot apply text-encoder LoRAs: the text-encoder part of a
kohya file fails to load ("Could not automatically infer state dict type") and that of a
diffusers-layout file is reported MISSING and left at its initial values. Fusing per request
costs one matmul per module when the LoRAs change instead.

Parsed LoRAs (their down/up tensors on the engine's device) are kept in a small LRU cache keyed
by sha256, so switching between recently used LoRAs reads no file.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .contracts import InvalidRequest, LoraRef
from .lora_format import FIELD, LoraFileError, inspect_lora

DEFAULT_CACHE_SIZE = 8
MAX_LORA_FILE_BYTES = 2 * 1024**3


@dataclass
class LoadedModule:
    component: str  # "unet" | "text_encoder"
    module: str  # the module's path in that component
    down: torch.Tensor  # float32 on the device, [rank, in * kh * kw]
    up: torch.Tensor  # float32 on the device, [out, rank]
    scale: float  # alpha / rank


@dataclass
class LoadedLora:
    sha256: str
    format: str
    modules: list[LoadedModule]
    nbytes: int


def read_lora_file(ref: LoraRef) -> bytes:
    path = Path(ref.path)
    try:
        size = path.stat().st_size
    except OSError:
        raise InvalidRequest(FIELD, f"the LoRA {ref.name} cannot be read: its file is missing") from None
    if size > MAX_LORA_FILE_BYTES:
        raise InvalidRequest(FIELD, f"the LoRA {ref.name} is too large ({size} bytes)")
    data = path.read_bytes()
    if ref.sha256 and hashlib.sha256(data).hexdigest() != ref.sha256.lower():
        raise InvalidRequest(FIELD, f"the LoRA {ref.name}'s file does not match its sha256 "
                                    "(changed or damaged)")
    return data


def parse_lora(data: bytes, *, model_path: str | Path, device, filename: str = "", sha256: str = "",
               name: str = "") -> LoadedLora:
    """Check a LoRA file fits the model (lora_format.inspect_lora) and load its tensors."""
    from safetensors.torch import load

    try:
        summary = inspect_lora(data, filename=filename, model_path=model_path)
    except LoraFileError as error:
        raise InvalidRequest(FIELD, f"{name}: {error.message}" if name else error.message) from None
    tensors = load(data)
    modules = []
    for m in summary.modules:
        down = tensors[m.down_key].to(device=device, dtype=torch.float32).flatten(1)
        up = tensors[m.up_key].to(device=device, dtype=torch.float32).flatten(1)
        modules.append(LoadedModule(m.component, m.model_module, down, up, m.alpha / m.rank))
    nbytes = sum(m.down.numel() + m.up.numel() for m in modules) * 4
    return LoadedLora(sha256=sha256 or hashlib.sha256(data).hexdigest(), format=summary.format,
                      modules=modules, nbytes=nbytes)


class LoraSet:
    """The LoRAs fused into one pipeline's UNet and text encoder(s); ``use(refs)`` makes the
    weights those of the base model plus exactly ``refs`` (an empty list: the base model)."""

    def __init__(self, components: dict[str, torch.nn.Module], *, model_path: str | Path, device,
                 cache_size: int = DEFAULT_CACHE_SIZE):
        self.components = components
        self.model_path = str(model_path)
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[str, LoadedLora] = OrderedDict()
        self._originals: dict[tuple[str, str], torch.Tensor] = {}  # the pristine weights we changed
        self._applied: tuple = ()  # ((sha256, weight), ...) fused now
        self.loads = 0  # files parsed (cache misses), for tests and benchmarks

    # -- the cache ---------------------------------------------------------------------------------

    def load(self, ref: LoraRef) -> LoadedLora:
        key = ref.sha256.lower()
        if key and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = read_lora_file(ref)
        loaded = parse_lora(data, model_path=self.model_path, device=self.device,
                            filename=Path(ref.path).name, sha256=key, name=ref.name)
        for module in loaded.modules:
            if self._weight(module.component, module.module) is None:
                raise InvalidRequest(FIELD, f"{ref.name}: the model has no layer {module.module}")
        self.loads += 1
        self._cache[loaded.sha256] = loaded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return loaded

    def _weight(self, component: str, module: str) -> torch.Tensor | None:
        model = self.components.get(component)
        if model is None:
            return None
        try:
            return model.get_submodule(module).weight
        except AttributeError:
            return None

    # -- applying ----------------------------------------------------------------------------------

    @property
    def applied(self) -> tuple:
        return self._applied

    def use(self, refs: Sequence[LoraRef]) -> None:
        """Fuse exactly ``refs`` (loading any not cached; InvalidRequest before any weight changes
        when one cannot be loaded or does not fit). Weight-0 LoRAs are left out."""
        wanted = sorted((((ref.sha256.lower(), float(ref.weight)), ref) for ref in refs if ref.weight != 0),
                        key=lambda item: item[0])
        key = tuple(pair for pair, _ in wanted)
        loaded = [(self.load(ref), weight) for (_, weight), ref in wanted]  # may raise: nothing changed yet
        if key == self._applied:
            return
        try:
            self._fuse(loaded)
        except BaseException:
            self.restore()
            raise
        self._applied = key

    def restore(self) -> None:
        """Put every changed weight back to the base model's (bit for bit)."""
        with torch.no_grad():
            for (component, module), original in self._originals.items():
                self._weight(component, module).copy_(original)
        self._originals.clear()
        self._applied = ()

    def _fuse(self, loaded: list[tuple[LoadedLora, float]]) -> None:
        deltas: dict[tuple[str, str], torch.Tensor] = {}
        with torch.no_grad():
            for lora, weight in loaded:
                for m in lora.modules:
                    delta = (m.up @ m.down).mul_(weight * m.scale)
                    slot = (m.component, m.module)
                    deltas[slot] = deltas[slot].add_(delta) if slot in deltas else delta
            for slot in [s for s in self._originals if s not in deltas]:  # no longer changed
                self._weight(*slot).copy_(self._originals.pop(slot))
            for slot, delta in deltas.items():
                weight = self._weight(*slot)
                original = self._originals.get(slot)
                if original is None:
                    original = self._originals[slot] = weight.detach().clone()
                fused = original.to(torch.float32) + delta.reshape(weight.shape)
                weight.copy_(fused.to(weight.dtype))
