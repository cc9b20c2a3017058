"""The job class every worker reads jobs with: it runs registered tasks only (`jobs.config.task_names`), and a
job it cannot read is set aside (`jobs.runtime.unreadable`) instead of taking the worker down."""

import logging
from collections.abc import Callable

from django.db import connections
from redis import Redis
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Job
from rq.serializers import Serializer

from jobs.config import task_names
from jobs.failures.attempts import PermanentJobError
from jobs.rq_compat import (
    FailureCallbackType,
    StoppedCallbackType,
    SuccessCallbackType,
    callback_name,
    import_attribute,
)

log = logging.getLogger(__name__)


class UnregisteredTaskError(PermanentJobError):
    """The job names a function that is not one of the project's tasks."""


class CeresJob(Job):
    @classmethod
    def fetch(cls, id: str, connection: Redis | None = None, serializer: Serializer | str | None = None) -> Job:
        try:
            return super().fetch(id, connection=connection, serializer=serializer)
        except (NoSuchJobError, StopRequested):  # StopRequested: RQ's SIGTERM handler, raised wherever we are
            raise
        except Exception as error:  # a bad id (ValueError) or a hash RQ cannot restore
            from jobs.runtime import unreadable  # it imports the models: not at startup

            unreadable.set_aside(connection, id, f"{type(error).__name__}: {error}")
            connections.close_all()  # a forking worker must not hand this thread's connection to a work-horse
            raise NoSuchJobError(id) from error

    @property
    def func(self) -> Callable[..., object]:
        if not task_names.allowed(self.func_name, task_names.TASKS):
            self.retries_left = 0  # no attempt can succeed: fail now, archived and alerted
            raise UnregisteredTaskError(f"{self.func_name!r} is not a registered task: refused without running it")
        return import_attribute(task_names.current(self.func_name) or "")  # allowed: never empty

    @property
    def success_callback(self) -> SuccessCallbackType | None:
        return self._registered_callback(callback_name(self, "success"), lambda: super(CeresJob, self).success_callback)

    @property
    def failure_callback(self) -> FailureCallbackType | None:
        return self._registered_callback(callback_name(self, "failure"), lambda: super(CeresJob, self).failure_callback)

    @property
    def stopped_callback(self) -> StoppedCallbackType | None:
        return self._registered_callback(callback_name(self, "stopped"), lambda: super(CeresJob, self).stopped_callback)

    def _registered_callback(
        self, name: str | None, resolve: Callable[[], Callable[..., object] | None]
    ) -> Callable[..., object] | None:
        if not name:
            return resolve()
        if not task_names.allowed(name, task_names.CALLBACKS):
            log.warning("job %s: callback %r is not registered; skipped", self.id, name)
            return None
        return import_attribute(task_names.RENAMED[name]) if name in task_names.RENAMED else resolve()
