"""The boundaries from docs/architecture.md, checked on the real import graph."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
WEB_MODULES = [
    "studio.urls", "studio.asgi", "generation.views", "generation.consumers", "generation.services",
    "generation.tasks", "generation.worker", "generation.forms", "billing.views", "billing.services",
]


def test_the_web_process_never_imports_torch():
    code = (
        "import django, sys; django.setup(); "
        + "; ".join(f"import {module}" for module in WEB_MODULES)
        + "; heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules); "
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "studio.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"web modules imported: {result.stdout} {result.stderr[-2000:]}"


def python_files(*folders):
    for folder in folders:
        yield from (BASE_DIR / folder).rglob("*.py")


def test_only_the_engine_imports_torch_and_the_engine_never_imports_django():
    heavy = re.compile(r"^\s*(import|from)\s+(torch|diffusers|transformers)\b", re.M)
    django = re.compile(r"^\s*(import|from)\s+(django|channels|celery|accounts|billing|studio)\b", re.M)
    outside = [p for p in python_files("studio", "accounts", "billing", "generation")
               if "engine" not in p.relative_to(BASE_DIR).parts and heavy.search(p.read_text())]
    engine_django = [p for p in (BASE_DIR / "generation" / "engine").rglob("*.py") if django.search(p.read_text())]
    assert outside == [] and engine_django == []
