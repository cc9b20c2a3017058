import django_rq
from django.core.management.base import BaseCommand

from jobs.config import crons
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Sync jobs.config.crons into rq-scheduler: one entry per spec, removed specs cancelled. Safe to run again."

    def handle(self, *args, **options):
        scheduler = django_rq.get_scheduler("maintenance")
        done = scheduler.sync_crons()
        for verb in ("added", "changed", "unchanged", "removed"):
            for name in done[verb]:
                spec = crons.SPECS.get(name)
                when = (
                    f" — `{spec.schedule}` {spec.zone}, next {scheduler.next_run(name):%Y-%m-%d %H:%M} UTC"
                    if spec
                    else ""
                )
                self.stdout.write(f"{verb}: {name}{when}")
