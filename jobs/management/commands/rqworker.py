"""`rqworker`, as django-rq ships it, with the worker class each queue's policy asks for:
`rqworker email slack` starts one in-process worker with every slot of both queues
(`jobs.slots`), `rqworker files` the forking one."""

from django.core.management.base import CommandError
from django_rq.management.commands import rqworker

from jobs.queues import QUEUES
from jobs.worker import worker_class_for


class Command(rqworker.Command):
    def handle(self, *args, **options):
        unknown = [name for name in args if name not in QUEUES]
        if unknown:
            raise CommandError(f"unknown queue {', '.join(unknown)}; the queues are {', '.join(QUEUES)}")
        if not options.get("worker_class"):
            try:
                options["worker_class"] = worker_class_for(args)
            except ValueError as error:
                raise CommandError(str(error)) from None
        return super().handle(*args, **options)
