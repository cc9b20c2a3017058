import json as json_module

from django.core.management.base import BaseCommand, CommandError

from jobs.management.base import OneLineErrors
from jobs.observability.health import health_report

MARKS = {"ok": "✔", "warn": "!", "fail": "✘"}


class Command(OneLineErrors, BaseCommand):
    help = "Check Redis, workers, scheduler, crons and backlogs. Exit status 1 when something has failed."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the report as JSON (as /health does)")

    def handle(self, *args, json: bool = False, **options):
        report = health_report()
        if json:
            self.stdout.write(json_module.dumps(report, indent=2))
        else:
            for check in report["checks"]:
                self.stdout.write(f"{MARKS[check['status']]} {check['name']}: {check['detail']}")
        if not report["healthy"]:
            raise CommandError("unhealthy")
