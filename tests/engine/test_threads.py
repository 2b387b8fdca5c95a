"""Torch's thread count: the Engine's ``threads`` and the worker's STUDIO_TORCH_THREADS setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_engine_sizes_torch_threads_at_load(demo_model_path, restore_threads):
    from generation.engine import Engine

    torch.set_num_threads(1)
    Engine(demo_model_path, device="cpu", threads=3)
    assert torch.get_num_threads() == 3
    Engine(demo_model_path, device="cpu", threads=0)  # 0: torch's default, i.e. left as it is
    assert torch.get_num_threads() == 3


def test_negative_threads_are_refused(demo_model_path):
    from generation.engine import Engine

    with pytest.raises(ValueError, match="threads"):
        Engine(demo_model_path, device="cpu", threads=-1)


def worker_threads(setting: str | None) -> tuple[int, int]:
    """torch.get_num_threads() in a fresh worker process before and after it loaded its engine."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("STUDIO_TORCH_THREADS", None)
    if setting is not None:
        env["STUDIO_TORCH_THREADS"] = setting
    env["DJANGO_SETTINGS_MODULE"] = "studio.settings"
    code = ("import django; django.setup(); import torch; from generation import worker; "
            "before = torch.get_num_threads(); worker.engine(); print(before, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.strip().splitlines()[-1].split()
    return int(before), int(after)


def test_the_worker_applies_studio_torch_threads():
    assert worker_threads("3")[1] == 3
    assert worker_threads(None)[1] == 1  # the embedded default: the worker shares the CPU with the web
    default, after = worker_threads("")  # empty (or 0): torch's own default is kept
    assert after == default
