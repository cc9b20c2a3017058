from django.core.management.base import BaseCommand

from jobs.failures.dead_letters import dead_letters_prune
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Delete dead-letter rows older than DEAD_LETTER_RETENTION_DAYS (or --days)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args, days, **options):
        self.stdout.write(f"deleted {dead_letters_prune(older_than_days=days)} dead letters")
