"""`manage.py billing_check`: every wallet's (users' and teams') cached balances equal its ledger sums, and no credits
are held for a subject that is over or gone (a job deleted or finished behind the services' back)."""

from django.core.management.base import BaseCommand, CommandError

from billing.selectors import open_holds_stale, wallet_owner_label, wallets_out_of_balance


class Command(BaseCommand):
    help = (
        "Check that every wallet's cached available/held balances equal the sums of its ledger entries, "
        "and that every open hold belongs to a subject that is still live."
    )

    def handle(self, *args, **options):
        bad = wallets_out_of_balance()
        for row in bad:
            self.stderr.write(
                f"wallet {row['pk']} ({wallet_owner_label(row)}): cached {row['available']}/{row['held']}, "
                f"ledger {row['ledger_available']}/{row['ledger_held']}"
            )
        stale = open_holds_stale()
        for hold in stale:
            self.stderr.write(
                f"wallet {hold.wallet_id} ({wallet_owner_label(hold.wallet)}): {hold.amount} credits held for "
                f"{hold.subject} since {hold.created_at:%Y-%m-%d %H:%M}, which is finished or no longer exists"
            )
        problems = [f"{len(bad)} wallet(s) out of balance"] if bad else []
        problems += [f"{len(stale)} stale hold(s)"] if stale else []
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write("All wallets balance. No stale holds.")
