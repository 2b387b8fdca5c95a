"""A team's credits page in Chromium on the live stack: the owner moves credits in (and is told
plainly when they ask for more than they have), sets a member's monthly cap; the member, on a
phone, sees the balance, their limit and their own use only. Screenshots of each."""

from __future__ import annotations

import pytest

from accounts.models import TeamRole
from billing.selectors import team_wallet_balance
from billing.services import credits_reserve
from tests.billing.support import make_job, make_team
from tests.e2e.browser_fixtures import (  # noqa: F401  (fixtures)
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

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_owner_tops_up_and_caps_a_member_who_sees_their_own_use(signed_in, shots):
    owner_session, page, owner = signed_in(credits=500)
    member_session, member_page, member = signed_in(credits=0, viewport=PHONE)
    with orm():
        team = make_team(owner, name="Lighthouse Studio", members={member: TeamRole.MEMBER})
    url = f"/billing/teams/{team.pk}/"

    page.goto(url)
    page.fill("#team-transfer input[name=amount]", "600")
    page.click("#team-transfer button[type=submit]")
    page.locator("#team-transfer .errorlist").wait_for()
    assert "You have only 500 credits available to move." in page.locator("#team-transfer").inner_text()
    shots(page, "1-desktop-too-much")

    page.fill("#team-transfer input[name=amount]", "120")
    page.click("#team-transfer button[type=submit]")
    page.locator(".message-success").wait_for()
    assert "Moved 120 credits" in page.locator(".messages").inner_text()
    assert page.locator("#team-balance .balance-big").first.inner_text() == "120"
    with orm():
        assert team_wallet_balance(team_id=team.pk) == (120, 0)

    row = page.locator("#member-caps tr", has_text=member.email)
    row.locator("input[type=number]").fill("40")
    row.locator("button:has-text('Save')").click()
    page.locator(".message-success").wait_for()
    assert "may now use 40 credits a month" in page.locator(".messages").inner_text()
    with orm():
        job = make_job(member)
        credits_reserve(user=member, subject=job.subject, amount=12, team=team)
    page.reload()
    assert "12 of 40" in page.locator("#member-caps").inner_text()
    assert "Transfer in" in page.locator("#credit-history").inner_text()
    shots(page, "2-desktop-owner")

    owner_phone = owner_session.context.new_page()
    owner_phone.set_viewport_size(PHONE)
    owner_phone.goto(url)
    shots(owner_phone, "3-phone-owner")
    owner_phone.close()

    member_page.goto(url)
    text = member_page.locator("main").inner_text()
    assert "Your monthly limit on these credits: 40" in text
    assert "Move credits" not in text and owner.email not in text
    assert "12" in member_page.locator("#team-usage").inner_text()
    shots(member_page, "4-phone-member")
    # The refused transfer's page came back as a 400 (as it should); Chromium logs that, nothing else.
    assert [e for e in owner_session.console_errors if "status of 400" not in e] == []
    assert member_session.console_errors == []
