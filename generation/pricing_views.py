"""The public pricing page: what an image costs by size and steps, what a LoRA training costs per
preset, and the credit packs on sale.

Prices come from the same function the Create form and the API charge with (services.job_cost,
billing's prices for the model that serves), so the page cannot drift from what is charged.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import packs_for_sale
from generation import services
from generation.engine.training.spec import PRESETS
from generation.selectors import model_info

PRICED_STEPS = (10, 20, 30, 50)
PRICED_SIDES = (64, 128, 256, 512, 768, 1024, 1536, 2048)


def priced_sizes(info) -> list[tuple[int, int]]:
    """Square sizes the model can make, its native size first among them, then one portrait size."""
    sizes = {(side, side) for side in PRICED_SIDES if side <= min(info.max_width, info.max_height)}
    sizes.add((info.native_width, info.native_height))
    portrait = (info.native_width, info.native_height * 3 // 2)
    if portrait[1] <= info.max_height:
        sizes.add(portrait)
    return sorted(sizes, key=lambda size: (size[0] * size[1], size))


@require_GET
def pricing(request: HttpRequest) -> HttpResponse:
    info = model_info()
    rows = [
        {"width": w, "height": h,
         "costs": [services.job_cost(width=w, height=h, steps=steps, num_images=1) for steps in PRICED_STEPS]}
        for w, h in priced_sizes(info)
    ]
    resolution = min(info.native_width, info.native_height)
    trainings = [
        {"preset": name, "steps": preset["steps"],
         "costs": [services.training_cost(method="lora", steps=preset["steps"], resolution=resolution, num_images=10,
                                          train_text_encoder=text_encoder) for text_encoder in (False, True)]}
        for name, preset in PRESETS.items()
    ]
    packs = list(packs_for_sale())
    reference = services.job_cost(width=info.native_width, height=info.native_height,
                                  steps=info.default_steps, num_images=1)
    return render(request, "generation/pricing.html", {
        "model": info, "steps": PRICED_STEPS, "rows": rows, "packs": packs, "reference": reference,
        "trainings": trainings, "training_resolution": resolution,
    })
