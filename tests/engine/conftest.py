"""Engine tests: plain pytest, no Django. The demo model is built once per session into a tmp dir."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    # The tiny model gains nothing from more threads, and a shared, oversubscribed CPU makes
    # multi-threaded torch spin: one thread is several times faster there.
    import torch

    torch.set_num_threads(int(os.environ.get("STUDIO_TEST_TORCH_THREADS", "1")))


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory):
    from generation.engine.demo_model import build

    return build(tmp_path_factory.mktemp("models") / "demo", seed=0, fit_samples=12)


@pytest.fixture(scope="session")
def engine_device():
    """STUDIO_TEST_ENGINE_DEVICE=cuda runs the engine tests on a GPU (default: cpu)."""
    return os.environ.get("STUDIO_TEST_ENGINE_DEVICE", "cpu")


@pytest.fixture(scope="session")
def engine(demo_model_path, engine_device):
    from generation.engine import Engine

    return Engine(demo_model_path, device=engine_device)


@pytest.fixture
def small_request():
    """A fast request for the demo model: 128x128, 4 steps."""
    from generation.engine import GenerationRequest

    return GenerationRequest(prompt="a photo of a cat", width=128, height=128, steps=4, seed=42)


def pytest_configure(config):
    # diffusers' schedulers call np.array(torch_tensor, copy=False) on numpy 2: harmless noise.
    config.addinivalue_line("filterwarnings",
                            r"ignore:__array__ implementation:DeprecationWarning:diffusers\..*")
