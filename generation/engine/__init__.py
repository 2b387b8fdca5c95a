"""Studio's generation engine: diffusers + torch behind plain dataclasses.

Importing this package is cheap and torch-free: the web process uses the request/model types,
validate_request, read_model_info and the infotext helpers. ``Engine`` (which imports torch and
diffusers) is loaded on first access, so only the worker pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contracts import (
    SAMPLERS,
    EngineError,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    ModelError,
    ModelInfo,
    StepUpdate,
    validate_request,
)
from .infotext import format_infotext, parse_infotext, request_fields_from_infotext
from .model_info import read_model_info

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "SAMPLERS",
    "Engine",
    "EngineError",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequest",
    "ModelError",
    "ModelInfo",
    "StepUpdate",
    "format_infotext",
    "parse_infotext",
    "read_model_info",
    "request_fields_from_infotext",
    "validate_request",
]


def __getattr__(name: str):
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
