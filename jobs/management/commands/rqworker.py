"""`rqworker`, as django-rq ships it, with the worker each queue's policy asks for:
`rqworker email slack` starts one in-process worker with every slot of both queues
(`jobs.runtime.slots`), or with `--processes N` (`auto`: one per core) N of them, forked from this
process; `rqworker maintenance files` one forking worker per unit of their concurrency, forked from
this process so they share its memory (`jobs.runtime.family`). `--worker-class` or `--burst` runs one
worker of that class in this process, as django-rq does."""

import os
from functools import partial

from django.core.management.base import CommandError
from django_rq.management.commands import rqworker

from jobs.config.policies import QUEUES
from jobs.management.base import OneLineErrors
from jobs.runtime.family import Family
from jobs.runtime.slots import worker_class_for
from jobs.runtime.worker import CeresWorker


class Command(OneLineErrors, rqworker.Command):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--processes",
            default="1",
            help="in-process workers to run, each with every slot of the queues (auto: one per core)",
        )

    def handle(self, *args, **options):
        if not args:
            in_process = " ".join(name for name, policy in QUEUES.items() if policy.in_process)
            forking = " ".join(name for name, policy in QUEUES.items() if not policy.in_process)
            raise CommandError(
                f"name the queues to work on: `rqworker {in_process}` (in-process) or `rqworker {forking}`"
            )
        unknown = [name for name in args if name not in QUEUES]
        if unknown:
            raise CommandError(f"unknown queue {', '.join(unknown)}; the queues are {', '.join(QUEUES)}")
        if options.get("worker_class"):
            return super().handle(*args, **options)
        try:
            options["worker_class"] = worker_class_for(args)
        except ValueError as error:
            raise CommandError(str(error)) from None
        count = _processes(options.get("processes") or "1")
        if options["worker_class"] is CeresWorker:
            if count != 1:
                raise CommandError("--processes is for in-process queues: forking ones run as their policy says")
            members = self._family(args, options)
        else:
            members = self._in_process(args, options, count)
        if len(members) > 1 and not options.get("burst"):
            Family(members).run()
            return None
        return super().handle(*args, **options)

    def _in_process(self, queue_names, options, count: int) -> dict:
        """`count` in-process workers on every queue named, each with all of its slots."""
        members = {}
        for n in range(1, count + 1):
            own = {**options, "pid": None, "name": f"{options['name']}-{n}" if options.get("name") else None}
            members[f"in-process-{n}"] = partial(rqworker.Command.handle, self, *queue_names, **own)
        return members

    def _family(self, queue_names, options) -> dict:
        """One forking worker per unit of each queue's concurrency, each on its own queue."""
        members = {}
        for name in queue_names:
            for n in range(1, QUEUES[name].concurrency + 1):
                label = f"{name}-{n}"
                own = {**options, "pid": None, "name": f"{options['name']}-{label}" if options.get("name") else None}
                members[label] = partial(rqworker.Command.handle, self, name, **own)
        return members


def _processes(value: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise CommandError(f"--processes takes a number of processes or auto, not {value!r}")
    return int(value)
