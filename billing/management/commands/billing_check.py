"""`manage.py billing_check`: verify that every wallet's cached balances equal its ledger sums."""

from django.core.management.base import BaseCommand, CommandError

from billing.selectors import wallets_out_of_balance


class Command(BaseCommand):
    help = "Check that every wallet's cached available/held balances equal the sums of its ledger entries."

    def handle(self, *args, **options):
        bad = wallets_out_of_balance()
        for row in bad:
            self.stderr.write(
                f"wallet {row['pk']} (user {row['owner_user_id']}): cached {row['available']}/{row['held']}, "
                f"ledger {row['ledger_available']}/{row['ledger_held']}"
            )
        if bad:
            raise CommandError(f"{len(bad)} wallet(s) out of balance")
        self.stdout.write("All wallets balance.")
