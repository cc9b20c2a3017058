"""The job class every worker reads jobs with: it runs registered tasks only (`jobs.tasks`)."""

import logging

from rq.job import Job

from jobs import tasks
from jobs.failures import PermanentJobError

log = logging.getLogger(__name__)


class UnregisteredTaskError(PermanentJobError):
    """The job names a function that is not one of the project's tasks."""


class CeresJob(Job):
    @property
    def func(self):
        if not tasks.allowed(self.func_name, tasks.TASKS):
            self.retries_left = 0  # no attempt can succeed: fail now, archived and alerted
            raise UnregisteredTaskError(f"{self.func_name!r} is not a registered task: refused without running it")
        return super().func

    @property
    def success_callback(self):
        return self._registered_callback(self._success_callback_name, lambda: super(CeresJob, self).success_callback)

    @property
    def failure_callback(self):
        return self._registered_callback(self._failure_callback_name, lambda: super(CeresJob, self).failure_callback)

    @property
    def stopped_callback(self):
        return self._registered_callback(self._stopped_callback_name, lambda: super(CeresJob, self).stopped_callback)

    def _registered_callback(self, name: str | None, resolve):
        if name and not tasks.allowed(name, tasks.CALLBACKS):
            log.warning("job %s: callback %r is not registered; skipped", self.id, name)
            return None
        return resolve()
