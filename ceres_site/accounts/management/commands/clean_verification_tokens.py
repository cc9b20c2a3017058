from django.core.management.base import BaseCommand

from ceres_site.accounts.tokens import tokens_clean
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Delete verification tokens expired or used more than VERIFICATION_TOKEN_RETENTION_HOURS ago."

    def handle(self, *args, **options):
        self.stdout.write(f"deleted {tokens_clean()} verification tokens")
