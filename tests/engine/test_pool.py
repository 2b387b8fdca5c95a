"""EnginePool: models load on demand, least recently used out by count and by memory, and a model
that fails to load leaves the others warm (fakes for the engine here; tests/generation/
test_model_registry.py runs the real engine through the worker)."""

from __future__ import annotations

import pytest

from generation.engine.pool import EnginePool, ModelLoadFailed


class FakeEngine:
    def __init__(self, path):
        self.path = path
        self.released = False

    def release(self):
        self.released = True


def loader(log):
    def load(path):
        if "broken" in path:
            raise OSError(f"cannot read {path}")
        log.append(path)
        return FakeEngine(path)
    return load


def test_models_load_once_and_the_least_recently_used_goes_first():
    loads = []
    pool = EnginePool(loader(loads), max_warm=2, free_bytes=lambda: 10**12, needed_bytes=lambda path: 1)
    a = pool.get("a")
    pool.get("b")
    assert pool.get("a") is a  # warm: not loaded again
    pool.get("c")  # evicts b, the least recently used
    assert loads == ["a", "b", "c"] and pool.paths() == ["a", "c"]


def test_a_big_model_evicts_as_many_as_memory_needs():
    loads, free = [], {"bytes": 100}
    pool = EnginePool(loader(loads), max_warm=5, free_bytes=lambda: free["bytes"],
                      needed_bytes=lambda path: 250 if path == "big" else 10)
    engines = [pool.get(name) for name in ("a", "b", "c")]

    def free_more_after_evictions():  # each eviction frees 100 bytes
        return 100 + 100 * sum(engine.released for engine in engines)
    pool.free_bytes = free_more_after_evictions
    pool.get("big")
    assert [engine.released for engine in engines] == [True, True, False]
    assert pool.paths() == ["c", "big"]


def test_a_model_that_fails_to_load_keeps_the_others_warm():
    pool = EnginePool(loader([]), max_warm=2, free_bytes=lambda: 10**12, needed_bytes=lambda path: 1)
    pool.get("a")
    with pytest.raises(ModelLoadFailed, match="OSError: cannot read broken"):
        pool.get("broken")
    assert pool.paths() == ["a"]
