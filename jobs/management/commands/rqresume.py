from django.core.management.base import BaseCommand

from jobs.config.policies import QUEUES
from jobs.management.base import OneLineErrors
from jobs.management.commands.queues import Command as Queues


class Command(OneLineErrors, BaseCommand):
    help = "Resume every queue (as `queues resume`, for each)."

    def add_arguments(self, parser):
        parser.add_argument("--reason", default="rqresume")

    def handle(self, *args, reason: str, **options):
        for name in QUEUES:
            Queues(stdout=self.stdout, stderr=self.stderr).handle(action="resume", queue=name, reason=reason)
