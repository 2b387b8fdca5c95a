"""What a job costs. Exact arithmetic (Fraction), rounded up once at the end."""

from __future__ import annotations

import math
from fractions import Fraction

from billing.models import ModelPrice, PriceSettings


def job_price(*, width: int, height: int, steps: int, num_images: int, model_name: str = "") -> int:
    """Credits for a job: linear in pixels x steps x images, times the model's multiplier, rounded up.

    With the default prices, 512x512, 30 steps, 1 image costs 4 credits.
    """
    for name, value in (("width", width), ("height", height), ("steps", steps), ("num_images", num_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    prices = PriceSettings.load()
    multiplier = Fraction(1)
    if model_name:
        row = ModelPrice.objects.filter(model_name=model_name).values_list("multiplier", flat=True).first()
        if row is not None:
            multiplier = Fraction(row)  # Decimal -> exact Fraction
    reference = prices.reference_width * prices.reference_height * prices.reference_steps
    exact = Fraction(prices.reference_credits) * multiplier * Fraction(width * height * steps * num_images, reference)
    return math.ceil(exact)
