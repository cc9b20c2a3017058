"""`rqscheduler`, as django-rq ships it, with this project's defaults: `python manage.py rqscheduler`
runs the crons' scheduler exactly as the process set does (queue `maintenance`, every 10 s)."""

from django.core.management.base import CommandError
from django_rq.management.commands import rqscheduler

from jobs.config.policies import MAINTENANCE, QUEUES
from jobs.config.processes import SCHEDULER_INTERVAL
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, rqscheduler.Command):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(queue=MAINTENANCE.name, interval=SCHEDULER_INTERVAL)

    def handle(self, *args, **options):
        if options["queue"] not in QUEUES:
            raise CommandError(f"unknown queue {options['queue']}; the queues are {', '.join(QUEUES)}")
        return super().handle(*args, **options)
