"""Make sure the configured model exists; build the tiny random demo model when it is the one missing."""

import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generation import selectors, services


class Command(BaseCommand):
    help = "Check the configured model, building the demo model under var/ when needed."

    def handle(self, *args, **options):
        path = selectors.model_path()
        if not (path / "model_index.json").exists() and not path.is_file():
            if settings.STUDIO_MODEL_PATH:
                raise CommandError(
                    f"STUDIO_MODEL_PATH={path} is neither a diffusers model folder (no model_index.json) "
                    "nor a .safetensors checkpoint."
                )
            self.stdout.write(f"Building the demo model in {path} …")
            # A subprocess: torch is only ever imported by the engine, never by the web side.
            subprocess.run([sys.executable, "-m", "generation.engine.demo_model", "build", str(path)], check=True)
        try:
            model = services.builtin_model()  # registered (the default when no other is) on first run
        except services.ModelNotUsable as error:  # e.g. a pickle .ckpt or a truncated file: docs/models.md
            raise CommandError(f"STUDIO_MODEL_PATH={path}: {error}") from error
        info = model.model_info()
        self.stdout.write(
            f"Model {model.name} ({info.hash}) at {path}: native {info.native_width}x{info.native_height}, "
            f"max {info.max_width}x{info.max_height}{' (the default)' if model.is_default else ''}"
        )
