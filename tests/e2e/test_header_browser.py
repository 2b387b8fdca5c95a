"""The top bar on a phone and on a desktop: every nav link and the balance in view, nothing scrolls.

On a 390 px phone the header wraps into two rows (brand, balance and log out; then the nav at full
width); on a desktop it stays one row."""

from __future__ import annotations

import pytest

from tests.e2e.browser_fixtures import (  # noqa: F401 (fixtures)
    DESKTOP,
    PHONE,
    _fresh_redis_state,
    browser,
    browser_session_factory,
    live_stack,
    orm,
    shared_live_stack,
    shots,
    signed_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

MEASURE = """() => {
  const box = el => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const nav = document.querySelector('.topbar .nav');
  return {
    pageWidth: document.documentElement.scrollWidth,
    viewWidth: window.innerWidth,
    navScrolls: nav.scrollWidth > nav.clientWidth + 1,
    nav: box(nav),
    links: [...nav.querySelectorAll('a')].map(a => ({text: a.textContent.trim(), ...box(a)})),
    balance: box(document.querySelector('.topbar .balance-slot')),
    logout: box(document.querySelector('.topbar-end form button')),
    brand: box(document.querySelector('.topbar .brand')),
  };
}"""


def _signed_in_at(signed_in, viewport, *, staff: bool):
    _session, page, user = signed_in(viewport=viewport)
    if staff:
        with orm():
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    page.goto("/gallery/")
    return page


def _assert_all_in_view(m: dict, expected: list[str]) -> None:
    assert m["pageWidth"] <= m["viewWidth"], f"the page scrolls sideways: {m['pageWidth']} > {m['viewWidth']}"
    assert not m["navScrolls"], "the nav scrolls inside itself"
    assert [link["text"].split()[0] for link in m["links"]] == expected
    for item in [*m["links"], m["balance"], m["logout"], m["brand"]]:
        assert 0 <= item["left"] and item["right"] <= m["viewWidth"] + 0.5, f"cut off: {item}"


@pytest.mark.parametrize("staff", [False, True], ids=["user", "staff"])
def test_phone_header_wraps_into_two_rows_with_every_link_in_view(signed_in, shots, staff):
    page = _signed_in_at(signed_in, PHONE, staff=staff)
    m = page.evaluate(MEASURE)
    expected = ["Create", "Canvas", "My", "LoRAs", "Teams", *(["Admin", "Reports"] if staff else [])]
    _assert_all_in_view(m, expected)
    # Row 1: brand, balance, log out; row 2: the nav across the whole width, links spread evenly.
    assert m["nav"]["top"] >= m["balance"]["bottom"] - 1, "the nav is not on its own row"
    assert m["nav"]["right"] - m["nav"]["left"] >= m["viewWidth"] * 0.9, "the nav does not span the width"
    assert len({round(link["top"]) for link in m["links"]}) == 1, "the nav links wrap onto more rows"
    gaps = [b["left"] - a["right"] for a, b in zip(m["links"], m["links"][1:])]
    assert max(gaps) - min(gaps) < 2, f"links are not evenly spaced: {gaps}"
    shots(page, "phone", full_page=False)


@pytest.mark.parametrize("staff", [False, True], ids=["user", "staff"])
def test_desktop_header_stays_one_row(signed_in, shots, staff):
    page = _signed_in_at(signed_in, DESKTOP, staff=staff)
    m = page.evaluate(MEASURE)
    _assert_all_in_view(m, ["Create", "Canvas", "My", "LoRAs", "Teams", *(["Admin", "Reports"] if staff else [])])
    assert m["nav"]["top"] < m["brand"]["bottom"] and m["balance"]["top"] < m["nav"]["bottom"], "desktop header wraps"
    shots(page, "desktop", full_page=False)
