"""The Create form's live cost quote (generation:quote): only the priced fields, a neutral
fragment for bad input, and the same markup as before it moved out of billing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.services import job_price
from generation.forms import size_for_aspect
from generation.selectors import model_info
from tests.factories import give_credits, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db):
    return make_user()


def test_quote_needs_login(client):
    assert client.get(reverse("generation:quote")).status_code == 302


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"width": 512, "height": 512, "steps": 30, "num_images": 1}, 4),
        ({"width": 512, "height": 512, "steps": 30, "num_images": 4}, 16),
        ({"width": 1024, "height": 1024, "steps": 30, "num_images": 1, "aspect": "16:9"}, 16),  # the size wins
    ],
)
def test_quote(client, user, params, expected):
    give_credits(user, 10)
    client.force_login(user)
    response = client.get(reverse("generation:quote"), params)
    assert response.status_code == 200
    expected_cost = job_price(model_name=model_info().name, **{k: params[k] for k in ("width", "height", "steps", "num_images")})
    assert expected_cost == expected  # the shipped/test model has no price multiplier
    html = response.content.decode()
    assert f"{expected} credits" in html and "(you have 10)" in html and 'id="cost-quote"' in html


def test_quote_from_aspect_uses_the_create_forms_size(client, user):
    info = model_info()
    width, height = size_for_aspect("3:2", info)
    expected = job_price(width=width, height=height, steps=30, num_images=2, model_name=info.name)
    client.force_login(user)
    html = client.get(
        reverse("generation:quote"), {"width": "", "height": "", "aspect": "3:2", "steps": 30, "num_images": 2}
    ).content.decode()
    assert f'data-cost="{expected}"' in html
    assert width > height


def test_quote_ignores_everything_but_the_priced_fields(client, user):
    client.force_login(user)
    base = {"aspect": "1:1", "steps": 30, "num_images": 1}
    plain = client.get(reverse("generation:quote"), base).content
    noisy = client.get(
        reverse("generation:quote"), {**base, "prompt": "secret", "csrfmiddlewaretoken": "x", "model_name": "sdxl"}
    ).content
    assert plain == noisy and b"secret" not in noisy


def test_quote_unaffordable_links_to_packs(client, user):
    give_credits(user, 3)
    client.force_login(user)
    html = client.get(
        reverse("generation:quote"), {"width": 512, "height": 512, "steps": 30, "num_images": 1}
    ).content.decode()
    assert "Not enough credits" in html and reverse("billing:packs") in html


@pytest.mark.parametrize(
    "params",
    [{}, {"steps": "x"}, {"width": -5, "height": 512, "steps": 30, "num_images": 1},
     {"width": 512, "height": 512, "steps": 30, "num_images": 99}, {"aspect": "7:1", "steps": 30, "num_images": 1},
     {"width": "1e9", "height": "512", "steps": "30", "num_images": "1"}, {"steps": "²", "num_images": "1"},
     {"width": "9" * 5000, "height": "512", "steps": "30", "num_images": "1"}, {"aspect": "\x00", "steps": "3"}],
)
def test_quote_bad_params_are_neutral(client, user, params):
    client.force_login(user)
    response = client.get(reverse("generation:quote"), params)
    assert response.status_code == 200
    assert "Cost: —" in response.content.decode()


def test_the_quote_moved_out_of_billing():
    from django.urls import NoReverseMatch

    with pytest.raises(NoReverseMatch):
        reverse("billing:quote")
