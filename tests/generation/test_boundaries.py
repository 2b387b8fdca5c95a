"""The boundaries from docs/architecture.md, checked on the real import graph."""

from __future__ import annotations

import ast
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


# --- Dependency direction: studio -> generation -> billing -> accounts; nothing points up -------

# What each app may import from the others (docs/architecture.md, "Boundaries, checked").
ALLOWED_APP_IMPORTS = {
    "accounts": set(),
    "billing": {"accounts"},
    "generation": {"billing", "accounts"},
}
APPS = {"studio", "generation", "billing", "accounts"}
# Inside generation: services never import the layers above them (they wake workers by task name).
SERVICES_MAY_NOT_IMPORT = ("generation.tasks", "generation.worker", "generation.views", "generation.consumers")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level and TYPE_CHECKING imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(BASE_DIR).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def app_python_files(app: str):
    for path in (BASE_DIR / app).rglob("*.py"):
        if "migrations" not in path.parts:  # history: old migrations may name what the app once used
            yield path


def test_apps_import_only_downwards():
    wrong = []
    for app, allowed in ALLOWED_APP_IMPORTS.items():
        for path in app_python_files(app):
            engine = app == "generation" and "engine" in path.relative_to(BASE_DIR).parts
            for module in imported_modules(path):
                top = module.split(".")[0]
                if top in APPS and top != app and (engine or top not in allowed):
                    wrong.append(f"{path.relative_to(BASE_DIR)} imports {module}")
    assert sorted(set(wrong)) == []


def test_templates_of_an_app_link_only_downwards():
    """billing's pages know no job pages; subjects are linked through settings.BILLING_SUBJECTS."""
    pattern = re.compile(r"""\{%\s*url\s+['"](\w+):""")
    wrong = [
        f"{path.relative_to(BASE_DIR)} links to {namespace}:"
        for path in (BASE_DIR / "templates" / "billing").rglob("*.html")
        for namespace in pattern.findall(path.read_text())
        if namespace not in {"billing", "admin", "account"}
    ]
    assert wrong == []


def test_generation_services_never_import_tasks_views_or_the_worker():
    services = BASE_DIR / "generation" / "services"
    files = list(services.rglob("*.py")) if services.is_dir() else [services.with_suffix(".py")]
    wrong = [
        f"{path.relative_to(BASE_DIR)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module.startswith(SERVICES_MAY_NOT_IMPORT)
    ]
    assert wrong == []


def test_the_import_scan_sees_function_level_and_relative_imports(tmp_path):
    fake = BASE_DIR / "billing" / "_scan_probe.py"
    fake.write_text("def f():\n    from generation.models import Job\n    from . import models\n")
    try:
        found = imported_modules(fake)
    finally:
        fake.unlink()
    assert {"generation.models", "generation.models.Job", "billing", "billing.models"} <= found
