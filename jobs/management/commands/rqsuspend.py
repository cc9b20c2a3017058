from django.core.management.base import BaseCommand, CommandError

from jobs.config.policies import QUEUES
from jobs.management.base import OneLineErrors
from jobs.management.commands.queues import Command as Queues


class Command(OneLineErrors, BaseCommand):
    help = "Pause every queue (as `queues pause`, for each): workers take no new job until rqresume."

    def add_arguments(self, parser):
        parser.add_argument("--duration", type=int, help="not supported: resume with rqresume")
        parser.add_argument("--reason", default="rqsuspend")

    def handle(self, *args, duration=None, reason: str, **options):
        if duration:
            raise CommandError("a suspension with --duration is not supported: run rqresume to resume")
        for name in QUEUES:
            Queues(stdout=self.stdout, stderr=self.stderr).handle(action="pause", queue=name, reason=reason)
