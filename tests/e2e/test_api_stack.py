"""End to end through the Studio API on the real stack: daphne, a Celery worker with the demo model,
Redis. A key creates a generation, follows its Server-Sent Events to the end (previews on the way),
downloads the PNG and reads its parameters; the credits charged are what the headers said."""

from __future__ import annotations

import io
import json

import pytest
import requests
from PIL import Image as PILImage

from accounts import services as accounts
from billing.selectors import wallet_balance
from generation.engine.infotext import parse_infotext
from tests.factories import give_credits, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def events_of(response) -> list[tuple[str, dict]]:
    """Read a text/event-stream response to its end: (event, data) pairs."""
    found, fields = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return found


def test_create_follow_the_stream_and_download_the_png_through_the_api(live_stack):
    user = make_user(password=None, credits=0)
    give_credits(user, 50)
    _, token = accounts.api_key_create(actor=user, name="e2e", scopes=["generate", "read_images"])
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    base = f"{live_stack.base_url}/api/v1"

    created = api.post(f"{base}/generations", json={"prompt": "a small red star in the top left", "steps": 12,
                                                    "width": 128, "height": 128, "seed": 99},
                       headers={"Idempotency-Key": "e2e-1"}, timeout=30)
    assert created.status_code == 202, created.text
    job = created.json()
    charged = int(created.headers["X-Credits-Charged"])
    assert charged == job["cost"] > 0 and int(created.headers["X-Credits-Balance"]) == 50 - charged

    with api.get(f"{base}/generations/{job['id']}/events", stream=True, timeout=120) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        received = events_of(stream)
    kinds = [kind for kind, _ in received]
    assert kinds[0] == "state" and kinds[-1] == "state" and "progress" in kinds
    steps = [data["step"] for kind, data in received if kind == "progress"]
    assert steps == sorted(steps) and steps[-1] == 12
    assert any((data.get("preview") or "").startswith("data:image/") for kind, data in received if kind == "progress")
    final = received[-1][1]
    assert final["state"] == "succeeded" and final["credits_charged"] == charged and len(final["images"]) == 1

    image = api.get(f"{base}/images/{final['images'][0]['id']}", timeout=30).json()
    png = api.get(f"{live_stack.base_url}{image['file_url']}", timeout=30)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    picture = PILImage.open(io.BytesIO(png.content))
    assert picture.size == (128, 128)
    parameters = parse_infotext(picture.text["parameters"])
    assert parameters["Seed"] == "99" and parameters["Steps"] == "12" and parameters["Size"] == "128x128"
    assert wallet_balance(user=user) == (50 - charged, 0)

    again = api.post(f"{base}/generations", json={"prompt": "a small red star in the top left", "steps": 12,
                                                  "width": 128, "height": 128, "seed": 99},
                     headers={"Idempotency-Key": "e2e-1"}, timeout=30)
    assert again.status_code == 202 and again.json()["id"] == job["id"]  # the retry: same job, no new charge
    assert again.headers["Idempotent-Replayed"] == "true" and wallet_balance(user=user) == (50 - charged, 0)
