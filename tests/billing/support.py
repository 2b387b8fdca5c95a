"""Helpers shared by the billing tests (imported as tests.billing.support)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model


@dataclass(frozen=True)
class Spend:
    """Something that spends credits, as billing sees it: a payer and an opaque subject.

    Billing knows no Job; its tests need none either (generation's tests cover real jobs).
    """

    user: object
    pk: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def subject(self) -> str:
        return f"job:{self.pk}"


def make_job(user, **_ignored) -> Spend:
    return Spend(user=user)


def give(user, amount: int):
    """Put credits in a user's wallet through the services (a staff adjustment)."""
    from billing.services import credits_adjust

    return credits_adjust(
        user=user, amount=amount, actor=_system_staff(), reason="test funds", idempotency_key=str(uuid.uuid4())
    )


def _system_staff():
    User = get_user_model()
    staff, _ = User.objects.get_or_create(
        username="test-staff", defaults={"email": "test-staff@example.com", "is_staff": True}
    )
    return staff


def assert_wallet_consistent(wallet_id: int) -> None:
    from billing.models import Wallet
    from billing.selectors import wallet_totals_from_ledger

    wallet = Wallet.objects.get(pk=wallet_id)
    assert (wallet.available, wallet.held) == wallet_totals_from_ledger(wallet_id=wallet_id)
    assert wallet.available >= 0 and wallet.held >= 0


def make_team(owner, *, name: str = "Acme", members: dict | None = None):
    """A team owned by `owner`, with `members` ({user: role}). Rows are made directly: the schema
    is what billing relies on; the team services are accounts' and tested there."""
    from accounts.models import Membership, Team, TeamRole

    team = Team.objects.create(name=name, created_by=owner)
    Membership.objects.create(team=team, user=owner, role=TeamRole.OWNER)
    for member, role in (members or {}).items():
        Membership.objects.create(team=team, user=member, role=role)
    return team


def fund_team(team, admin, amount: int):
    """Put credits in a team's wallet the way an admin does: give the admin credits, move them in."""
    from billing.services import credits_transfer_to_team

    give(admin, amount)
    return credits_transfer_to_team(user=admin, team=team, amount=amount, idempotency_key=str(uuid.uuid4()))
