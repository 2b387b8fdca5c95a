"""Demo-model tests: plain pytest, no Django. They load the shipped studio-tiny weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WEIGHTS = Path(__file__).resolve().parents[2] / "generation/engine/weights/studio-tiny"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    # One thread: a shared, oversubscribed CPU makes multi-threaded torch spin.
    import torch

    torch.set_num_threads(int(os.environ.get("STUDIO_TEST_TORCH_THREADS", "1")))


@pytest.fixture(scope="session")
def weights_path() -> Path:
    return WEIGHTS


@pytest.fixture(scope="session")
def pipe(weights_path):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(weights_path, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    return p
