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
    quick = re.search(r"<th scope=\"row\">Quick</th><td>150</td>(.*?)</tr>", html).group(1)
    side = min(w, h)
    assert [int(c.replace(",", "")) for c in re.findall(r"<td>([\d,]+)</td>", quick)] == [
        generation.training_cost(method="lora", steps=150, resolution=side, num_images=10, train_text_encoder=te)
        for te in (False, True)
    ]


# --- API keys pages -----------------------------------------------------------------------------

from accounts import services as accounts  # noqa: E402
from accounts.models import ApiKey, Membership, TeamRole  # noqa: E402
from accounts.selectors import api_key_authenticate  # noqa: E402
from billing import services as billing  # noqa: E402
from tests.api.conftest import fast_user as make_user
from tests.factories import give_credits  # noqa: E402

TOKEN = re.compile(r'value="(sk_live_[0-9a-f]{8}_[A-Za-z0-9_-]{43})"')


def test_a_key_made_on_the_page_is_shown_once_then_revoked(client):
    user = make_user()
    client.force_login(user)
    page = client.get("/billing/keys/")
    assert page.status_code == 200 and b"No keys yet" in page.content
    made = client.post("/billing/keys/", {"name": "Krita", "scopes": ["generate"], "monthly_credit_cap": "50"})
    assert made.status_code == 200 and made["Cache-Control"] == "no-store"
    token = TOKEN.search(made.content.decode()).group(1)
    key = api_key_authenticate(token)
    assert key.owner_user == user and key.scopes == ["generate"] and key.monthly_credit_cap == 50
    assert b'data-copy="new-api-key"' in made.content
    again = client.get("/billing/keys/").content.decode()
    assert token not in again and TOKEN.search(again) is None and f"{key.prefix}…" in again  # shown once
    refused = client.post("/billing/keys/", {"name": "", "scopes": []})
    assert refused.status_code == 400 and ApiKey.objects.count() == 1

    stranger = make_user()
    client.force_login(stranger)
    assert client.post(f"/billing/keys/{key.pk}/revoke/").status_code == 404
    assert client.get(f"/billing/keys/{key.pk}/").status_code == 404
    assert client.get(f"/billing/keys/{key.pk}/usage.csv").status_code == 404
    assert api_key_authenticate(token) == key
    client.force_login(user)
    assert client.post(f"/billing/keys/{key.pk}/revoke/").status_code == 302
    assert api_key_authenticate(token) is None
    assert b"Revoked" in client.get("/billing/keys/").content


def test_usage_per_key_per_day_as_table_chart_and_csv(client):
    user = make_user()
    give_credits(user, 100)
    key, _ = accounts.api_key_create(actor=user, name="bot", scopes=["generate"])
    other, _ = accounts.api_key_create(actor=user, name="other", scopes=["generate"])
    for subject, amount, via in (("job:1", 5, key), ("job:2", 7, key), ("job:3", 11, other), ("job:4", 13, None)):
        billing.credits_reserve(user=user, subject=subject, amount=amount, api_key=via)
        billing.credits_capture(subject=subject, amount=amount)
    client.force_login(user)
    listing = client.get("/billing/keys/").content.decode()
    assert re.search(rf'data-key="{key.prefix}".*?<td class="num">12</td>', listing, re.S)
    page = client.get(f"/billing/keys/{key.pk}/?days=7")
    html = page.content.decode()
    assert page.status_code == 200 and "<strong>12</strong> credits in 2 charges" in html
    assert html.count('<rect class="bar bar-spent"') == 7
    csv_response = client.get(f"/billing/keys/{key.pk}/usage.csv?days=7")
    assert csv_response["Content-Type"].startswith("text/csv")
    lines = csv_response.content.decode().splitlines()
    assert lines[0] == "day,key_prefix,charges,credits" and len(lines) == 8
    assert lines[-1].endswith(f",{key.prefix},2,12") and all(line.endswith(",0,0") for line in lines[1:-1])


def test_team_keys_page_is_for_team_admins(client):
    owner, admin, member = make_user(), make_user(), make_user()
    team = generation.team_create(user=owner, name="Blue")
    Membership.objects.create(team=team, user=admin, role=TeamRole.ADMIN)
    Membership.objects.create(team=team, user=member, role=TeamRole.MEMBER)
    url = f"/billing/teams/{team.pk}/keys/"
    client.force_login(member)
    assert b"data-team-api-keys" not in client.get(f"/teams/{team.pk}/").content
    assert client.get(url).status_code == 404
    assert client.post(url, {"name": "ci", "scopes": ["generate"]}).status_code == 404
    client.force_login(admin)
    assert f'href="{url}" data-team-api-keys'.encode() in client.get(f"/teams/{team.pk}/").content
    made = client.post(url, {"name": "ci", "scopes": ["generate", "train"]})
    key = api_key_authenticate(TOKEN.search(made.content.decode()).group(1))
    assert key.owner_team == team and key.created_by == admin
    client.force_login(member)
    assert client.get(f"/billing/keys/{key.pk}/").status_code == 404
    client.force_login(owner)
    assert client.get(f"/billing/keys/{key.pk}/").status_code == 200
    assert client.post(f"/billing/keys/{key.pk}/revoke/")["Location"] == url


def test_the_pages_need_no_inline_script_or_style(client):
    """Under the site's Content-Security-Policy (script-src/style-src 'self'): the Copy button is
    static/js/api-keys.js, the chart is plain SVG."""
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    style_attribute = re.compile(r"<[^>]+\sstyle=", re.I)
    user = make_user()
    key, _ = accounts.api_key_create(actor=user, name="k", scopes=["generate"])
    client.force_login(user)
    pages = [client.post("/billing/keys/", {"name": "n", "scopes": ["generate"]}), client.get("/billing/keys/"),
             client.get(f"/billing/keys/{key.pk}/"), client.get("/pricing/")]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200 and not inline_script.findall(html) and not style_attribute.findall(html)
    assert "js/api-keys.js" in pages[0].content.decode()


def test_staff_find_keys_by_prefix_in_the_admin_without_the_hash(client):
    staff = make_user()
    staff.is_staff = staff.is_superuser = True
    staff.save()
    key, _ = accounts.api_key_create(actor=make_user(), name="bot", scopes=["generate"])
    client.force_login(staff)
    listing = client.get(f"/admin/accounts/apikey/?q={key.prefix}")
    assert listing.status_code == 200 and key.prefix in listing.content.decode()
    page = client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert key.prefix in page and key.secret_hash not in page
