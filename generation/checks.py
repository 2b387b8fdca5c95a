"""Settings checks (Django's system checks): a mistyped worker setting is an error at start-up, not
a model marked broken when a worker first loads it."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from generation.engine.contracts import COMPILE_MODES, DTYPES


@register()
def speed_settings(app_configs, **kwargs) -> list[Error]:
    errors = []
    if settings.STUDIO_TORCH_COMPILE and settings.STUDIO_TORCH_COMPILE not in COMPILE_MODES:
        errors.append(Error(f"STUDIO_TORCH_COMPILE={settings.STUDIO_TORCH_COMPILE!r} is not a torch.compile mode",
                            hint=f"Leave it empty (off) or use one of: {', '.join(COMPILE_MODES)}.", id="studio.E001"))
    if settings.STUDIO_DTYPE and settings.STUDIO_DTYPE not in DTYPES:
        errors.append(Error(f"STUDIO_DTYPE={settings.STUDIO_DTYPE!r} is not a dtype the engine knows",
                            hint=f"Leave it empty (the device's default) or use one of: {', '.join(DTYPES)}.",
                            id="studio.E002"))
    return errors
