"""Warm models of one worker: load on demand, keep as many as memory allows, least recently used out.

No Django here (like the rest of the engine). The worker asks `pool.get(path)` for each job; a
model not warm yet is loaded (after evicting the least recently used ones while the new one would
not fit), and a model that fails to load raises ModelLoadFailed, leaving the others warm.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
# What a loaded model takes beside its weights' size on disk (activations, allocator slack).
HEADROOM = 1.2


class ModelLoadFailed(Exception):
    """A model could not be loaded; the message says why."""


def weights_bytes(path: str | Path) -> int:
    """The size of a model's weights on disk: the file, or every weight file under the folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.suffix in WEIGHT_SUFFIXES and file.is_file())


def free_memory_bytes() -> int:
    """Memory free for another model: the GPU's where there is one (the engine runs there), else
    the machine's available RAM."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class EnginePool:
    """Engines by model path, most recently used last.

    `load(path)` makes an engine; `max_warm` bounds how many stay loaded whatever the memory;
    `free_bytes()` says how much memory is free now, and `needed_bytes(path)` what a model needs
    (its weights on disk times HEADROOM, weights_bytes), so a big model evicts more of the others.
    """

    def __init__(self, load: Callable[[str], object], *, max_warm: int = 2,
                 free_bytes: Callable[[], int] | None = None,
                 needed_bytes: Callable[[str], int] | None = None):
        self.load = load
        self.max_warm = max(1, max_warm)
        self.free_bytes = free_bytes or free_memory_bytes
        self.needed_bytes = needed_bytes or (lambda path: int(weights_bytes(path) * HEADROOM))
        self.warm: OrderedDict[str, object] = OrderedDict()

    def get(self, path: str | Path):
        key = str(path)
        if key in self.warm:
            self.warm.move_to_end(key)
            return self.warm[key]
        self._make_room(key)
        try:
            engine = self.load(key)
        except Exception as error:
            raise ModelLoadFailed(f"{type(error).__name__}: {error}") from error
        self.warm[key] = engine
        return engine

    def _make_room(self, key: str) -> None:
        while len(self.warm) >= self.max_warm:
            self._evict_oldest()
        needed = self.needed_bytes(key)
        while self.warm and self.free_bytes() < needed:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        path, engine = self.warm.popitem(last=False)
        logger.info("Unloading model %s to make room", path)
        release = getattr(engine, "release", None)
        if release is not None:
            release()
        del engine
        gc.collect()

    def is_warm(self, path: str | Path) -> bool:
        return str(path) in self.warm

    def paths(self) -> list[str]:
        """Warm models, least recently used first."""
        return list(self.warm)
