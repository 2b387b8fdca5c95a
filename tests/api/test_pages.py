"""The pages around the API: public pricing, and the API keys pages (create shown once, revoke,
usage per day with its chart and CSV), for a user and for a team's admins."""

from __future__ import annotations

import re

import pytest

from billing.models import CreditPack, ModelPrice
from generation import services as generation
from generation.selectors import model_info

pytestmark = [pytest.mark.django_db]


def test_the_pricing_page_is_public_and_charges_what_the_web_charges(client):
    info = model_info()
    ModelPrice.objects.create(model_name=info.name, multiplier="2.500")
    CreditPack.objects.create(name="Starter", credits=500, price_cents=500)
    response = client.get("/pricing/")
    assert response.status_code == 200
    html = response.content.decode()
    w, h = info.native_width, info.native_height
    row = re.search(rf"<th scope=\"row\">{w}×{h}</th>(.*?)</tr>", html).group(1)
    cells = [int(c.replace(",", "")) for c in re.findall(r"<td>([\d,]+)</td>", row)]
    assert cells == [generation.job_cost(width=w, height=h, steps=s, num_images=1) for s in (10, 20, 30, 50)]
    assert cells[-1] > cells[0] >= 1
    assert "Starter" in html and "$5.00" in html
