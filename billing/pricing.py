"""What a job costs. Exact arithmetic (Fraction), rounded up once at the end."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from billing.models import ModelPrice, PriceSettings


def job_price(*, width: int, height: int, steps: int, num_images: int, model_name: str = "") -> int:
    """Credits for a job: linear in pixels x steps x images, times the model's multiplier, rounded up.

    With the default prices, 512x512, 30 steps, 1 image costs 4 credits.
    """
    _check_positive(width=width, height=height, steps=steps, num_images=num_images)
    prices = PriceSettings.load()
    return math.ceil(_credits_per_step_pixel(prices, model_name) * width * height * steps * num_images)


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")


def model_price_multiplier(*, model_name: str) -> Decimal:
    """The model's price multiplier (1 unless staff set one)."""
    row = ModelPrice.objects.filter(model_name=model_name).values_list("multiplier", flat=True).first()
    return Decimal("1.000") if row is None else row


def model_price_set(*, model_name: str, multiplier) -> None:
    """Set a model's price multiplier (0 or more; 1 deletes the row: the default)."""
    multiplier = Decimal(str(multiplier))
    if not multiplier.is_finite() or multiplier < 0:
        raise ValueError(f"A price multiplier is 0 or more, not {multiplier}")
    if multiplier == 1:
        ModelPrice.objects.filter(model_name=model_name).delete()
    else:
        ModelPrice.objects.update_or_create(model_name=model_name, defaults={"multiplier": multiplier})


def _model_multiplier(model_name: str) -> Fraction:
    # Decimal -> exact Fraction
    return Fraction(model_price_multiplier(model_name=model_name)) if model_name else Fraction(1)


def _credits_per_step_pixel(prices: PriceSettings, model_name: str) -> Fraction:
    """Credits for one denoising step of one pixel (exact), with the model's multiplier."""
    reference = prices.reference_width * prices.reference_height * prices.reference_steps
    return Fraction(prices.reference_credits) * _model_multiplier(model_name) / reference


def training_price(*, steps: int, resolution: int, batch: int = 1, train_text_encoder: bool = False,
                   class_images: int = 0, class_image_steps: int = 0, model_name: str = "") -> int:
    """Credits for a training run, priced like generation, rounded up once.

    One training step at `resolution` costs `training_step_cost` generation steps of a
    resolution x resolution image, per image of its `batch` (x `training_text_encoder_multiplier`
    when the text encoder trains too); the `class_images` that prior preservation first generates
    cost what generating them costs (`class_image_steps` steps each). The model's multiplier applies.
    """
    _check_positive(steps=steps, resolution=resolution, batch=batch)
    for name, value in (("class_images", class_images), ("class_image_steps", class_image_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
    if class_images and not class_image_steps:
        raise ValueError("class_image_steps must be positive when there are class images")
    prices = PriceSettings.load()
    per_step = Fraction(prices.training_step_cost)
    if train_text_encoder:
        per_step *= Fraction(prices.training_text_encoder_multiplier)
    generation_steps = per_step * steps * batch + class_images * class_image_steps
    return math.ceil(_credits_per_step_pixel(prices, model_name) * resolution * resolution * generation_steps)
