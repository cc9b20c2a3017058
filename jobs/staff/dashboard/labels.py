"""What staff read for RQ's job states (RQ's own names stay in URLs and code): a list of jobs in a
state ("fallidos") and one job's state ("fallido")."""

from django.utils.translation import pgettext_lazy

LIST_LABELS = {
    "rate_limited": pgettext_lazy("jobs", "waiting their turn"),
    "queued": pgettext_lazy("jobs", "queued"),
    "started": pgettext_lazy("jobs", "running"),
    "scheduled": pgettext_lazy("jobs", "scheduled"),
    "deferred": pgettext_lazy("jobs", "deferred"),
    "finished": pgettext_lazy("jobs", "finished"),
    "retrying": pgettext_lazy("jobs", "retrying"),
    "failed": pgettext_lazy("jobs", "failed"),
    "canceled": pgettext_lazy("jobs", "canceled"),
}
JOB_LABELS = {
    "rate_limited": pgettext_lazy("a job", "waiting its turn"),
    "queued": pgettext_lazy("a job", "queued"),
    "started": pgettext_lazy("a job", "running"),
    "scheduled": pgettext_lazy("a job", "scheduled"),
    "deferred": pgettext_lazy("a job", "deferred"),
    "finished": pgettext_lazy("a job", "finished"),
    "retrying": pgettext_lazy("a job", "retrying"),
    "failed": pgettext_lazy("a job", "failed"),
    "canceled": pgettext_lazy("a job", "canceled"),
    "stopped": pgettext_lazy("a job", "stopped"),
    "created": pgettext_lazy("a job", "created"),
    "gone": pgettext_lazy("a job", "gone"),
}

WORKER_LABELS = {
    "started": pgettext_lazy("a worker", "starting"),
    "idle": pgettext_lazy("a worker", "idle"),
    "busy": pgettext_lazy("a worker", "busy"),
    "suspended": pgettext_lazy("a worker", "suspended"),
    "gone": pgettext_lazy("a worker", "gone"),
}


def state_label(state: str) -> str:
    return LIST_LABELS.get(state, state)


def job_state_label(state: str) -> str:
    return JOB_LABELS.get(state, state)


def worker_state_label(state: str) -> str:
    return WORKER_LABELS.get(state, state)
