"""The API's generation endpoints (studio/api.py mounts `router`). Read-only for now: the model
that serves, the samplers, and a key's own generations (generations.py); creating them, images and
the A1111 dialect come next (docs/api.md)."""

from __future__ import annotations

from ninja import Field, Router, Schema

from accounts.api import problems
from billing.pricing import model_price_multiplier
from generation.api.common import key_user
from generation.api.generations import router as generations_router
from generation.api.images import router as images_router
from generation.api.loras import router as loras_router
from generation.api.trainings import router as trainings_router
from generation.engine.contracts import SAMPLERS
from generation.selectors import default_model
from generation.services.sd_models import models_to_list

router = Router(tags=["models"])


class ModelOut(Schema):
    name: str = Field(description="The value to send as a generation's `model`.")
    title: str
    description: str
    is_default: bool = Field(description="What a generation without `model` runs on.")
    price_multiplier: float = Field(description="Its prices are the studio's times this.")
    hash: str = Field(description="A1111's short hash: the first 10 hex digits of a SHA-256 over the weights.")
    family: str = Field(description="sd1, sd2, sdxl, or the model's own family name.")
    native_width: int
    native_height: int
    max_width: int
    max_height: int
    default_steps: int
    default_guidance_scale: float
    default_sampler: str


class SamplerOut(Schema):
    name: str = Field(description="The value to send as `sampler`.")
    label: str = Field(description="A1111's name for it (as in the PNG parameters).")


@router.get("/models", response={200: list[ModelOut], **problems()}, summary="The models this studio serves")
def models(request):
    """The models a generation may pick (`model`), the default one first (a user key also lists its
    user's private models: their full fine-tunes)."""
    offered = models_to_list(key_user(request))
    default = default_model()
    return [_model_out(model, is_default=default is not None and model.pk == default.pk) for model in offered]


def _model_out(model, *, is_default: bool) -> ModelOut:
    info = model.model_info()
    return ModelOut(
        name=model.name, title=model.title, description=model.description, is_default=is_default,
        price_multiplier=float(model_price_multiplier(model_name=model.name)), hash=info.hash, family=info.family,
        native_width=info.native_width, native_height=info.native_height, max_width=info.max_width,
        max_height=info.max_height, default_steps=info.default_steps,
        default_guidance_scale=info.default_guidance_scale, default_sampler=info.default_sampler,
    )


@router.get("/samplers", response={200: list[SamplerOut], **problems()}, summary="The samplers a generation may use")
def samplers(request):
    return [SamplerOut(name=name, label=label) for name, label in SAMPLERS.items()]


router.add_router("", generations_router)
router.add_router("", images_router)
router.add_router("", trainings_router)
router.add_router("", loras_router)
