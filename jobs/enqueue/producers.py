"""The only place that enqueues jobs: one row per kind of job.

Every producer takes ids and small values (never model instances or secrets), gives its job a
deterministic id, and enqueues it once (`jobs.enqueue.unique` says what a repeated call does).
Inside a transaction a producer enqueues only once it commits, and returns None.
"""

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from django.conf import settings
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from jobs import rq_compat
from jobs.config import policies, task_names, tenancy
from jobs.enqueue import clients, unique
from jobs.enqueue.unique import Enqueued, after_commit


@dataclass(frozen=True)
class Producer:
    """Calling it enqueues `task` on `queue`, with the call's keyword arguments as the job's kwargs."""

    queue: policies.QueuePolicy
    task: str
    job_id: str | Callable[[dict], str]  # a template of the kwargs (and `random`, a fresh uuid's hex)
    cooldown: bool = False  # a call within VERIFY_RESEND_COOLDOWN_SECONDS of the job's end does nothing
    result_ttl: int | None = None  # None: the queue's
    tenant: bool = False  # a municipality's job: refused without its id (`municipality=`, `jobs.config.tenancy`)

    def __call__(self, *, job_id: str | None = None, delay: int = 0, **kwargs) -> Enqueued | None:
        self._check(kwargs)  # here, not at commit: the caller's mistake raises in the caller
        return after_commit(lambda: self.now(job_id=job_id, delay=delay, **kwargs))

    def now(self, *, job_id: str | None = None, delay: int = 0, **kwargs) -> Enqueued:
        """Enqueue at once, in a transaction or not."""
        self._check(kwargs)
        return unique.enqueue(
            self.queue.name, self.task, job_id=job_id or self.id_for(kwargs), kwargs=kwargs,
            cooldown=self._cooldown(), delay=delay, result_ttl=self.result_ttl,
        )  # fmt: skip

    def many(self, calls: Iterable[dict]) -> list[Enqueued] | None:
        """A job per kwargs, a batch per Redis round trip; one result per distinct id, in order."""
        ids = [(self.id_for(self._check(kwargs)), kwargs) for kwargs in calls]  # read now, not at commit
        return after_commit(
            lambda: unique.enqueue_many(self.queue.name, self.task, calls=ids, cooldown=self._cooldown())
        )

    def id_for(self, kwargs: dict) -> str:
        if callable(self.job_id):
            return self.job_id(kwargs)
        if "{random" in self.job_id:  # a uuid only where the id asks for one: `many` makes thousands of ids
            return self.job_id.format(**kwargs, random=uuid4().hex)
        return self.job_id.format(**kwargs)

    def _check(self, kwargs: dict) -> dict:
        if self.tenant and tenancy.municipality_of(kwargs) is None:
            raise TypeError(f"{self.task}: a municipality's job needs `{tenancy.KWARG}=<its id>`, got {kwargs!r}")
        return kwargs

    def _cooldown(self) -> int:
        return settings.VERIFY_RESEND_COOLDOWN_SECONDS if self.cooldown else 0


EMAIL, FILES, BULK, BULK_OWN, SLACK = policies.EMAIL, policies.FILES, policies.BULK, policies.BULK_OWN, policies.SLACK


def _digest(kwargs: dict) -> str:
    """A municipality's address as a job id may hold it (letters, digits, `-`), and nothing to read in
    the dashboard. The municipality is required: the job looks for the account in it alone."""
    return hashlib.sha256(f"{kwargs['municipality']}:{kwargs['email']}".encode()).hexdigest()[:32]


# The account verification email (the worker issues the token); `.many` for the newsletter's many users.
enqueue_email_verify = Producer(
    EMAIL, task_names.SEND_VERIFY_EMAIL, "email-verify-{user_id}", cooldown=True, tenant=True
)
# The welcome email, once the user is verified.
enqueue_email_welcome = Producer(EMAIL, task_names.SEND_WELCOME_EMAIL, "email-welcome-{user_id}", tenant=True)
# A resend asked for `email` on the site of `municipality` (an id), whatever it is: the worker looks
# for an unverified account with that address there and, if there is one, enqueues its verification
# email. The page does this same work for every address, so its answer and its timing tell no one
# who has an account.
enqueue_email_resend = Producer(
    EMAIL, task_names.RESEND_VERIFY_EMAIL, lambda kwargs: f"email-resend-{_digest(kwargs)}",
    cooldown=True, tenant=True,
)  # fmt: skip
# Tell a user that someone tried to sign up with their address (the signup page does not say).
enqueue_email_account_exists = Producer(
    EMAIL, task_names.SEND_ACCOUNT_EXISTS_EMAIL, "email-exists-{user_id}", cooldown=True, tenant=True
)
# A password reset asked for `email` on the site of `municipality`, whatever it is: the worker looks
# for an account there that signs in with a password and, if there is one, enqueues its reset email
# (the worker makes the link). Like the resend, the same work for every address.
enqueue_password_reset_request = Producer(
    EMAIL, task_names.REQUEST_PASSWORD_RESET, lambda kwargs: f"email-reset-ask-{_digest(kwargs)}",
    cooldown=True, tenant=True,
)  # fmt: skip
enqueue_email_password_reset = Producer(
    EMAIL, task_names.SEND_PASSWORD_RESET_EMAIL, "email-reset-{user_id}", cooldown=True, tenant=True
)
# Tell a person why their CV was not accepted.
enqueue_email_cv_rejected = Producer(EMAIL, task_names.SEND_CV_REJECTED_EMAIL, "email-cv-{upload_id}", tenant=True)
# Check an uploaded CV, make an uploaded profile picture safe and small (`jobs.tasks.files`).
_VALIDATE_CV = Producer(FILES, task_names.VALIDATE_CV, "files-cv-{upload_id}", tenant=True)
_OPTIMIZE_PICTURE = Producer(FILES, task_names.OPTIMIZE_PROFILE_PICTURE, "files-picture-{upload_id}", tenant=True)
# One newsletter job per recipient, on the bulk queue (use `.many`).
_NEWSLETTER = Producer(BULK, task_names.SEND_NEWSLETTER, "bulk-nl{newsletter_id}-{user_id}", tenant=True)
# The same, for a municipality with its own mail server: paced by that server's limit alone.
_NEWSLETTER_OWN = Producer(BULK_OWN, _NEWSLETTER.task, _NEWSLETTER.job_id, tenant=True)
# A staff member's test copy, on the email queue (it must not wait behind the campaign).
_NEWSLETTER_TEST = Producer(
    EMAIL, task_names.SEND_NEWSLETTER, "email-nltest-{newsletter_id}-{user_id}-{random:.8}", tenant=True
)
# Post `text` to Slack; an alert with a `job_id` of its own is posted once however often asked.
_SLACK_ALERT = Producer(SLACK, task_names.POST_TO_SLACK, "slack-{random}")
# Gather the final failures of `queue_name` into one Slack message; result_ttl 0 frees the id once
# done, so the next failure schedules the next flush.
_ALERT_FLUSH = Producer(SLACK, task_names.FLUSH_ALERTS, "slack-flush-{queue_name}", result_ttl=0)


def _naming(municipality: int | None) -> dict[str, Any]:
    """The kwarg a job names its municipality by, if it has one (`jobs.config.tenancy`)."""
    return {} if municipality is None else {tenancy.KWARG: municipality}


def enqueue_email_verify_many(*, user_ids: Iterable[int], municipalities: Mapping[int, int]) -> list[Enqueued] | None:
    """`municipalities`: user id -> the id of their municipality, which their job carries."""
    return enqueue_email_verify.many(
        {"user_id": user_id, **_naming(municipalities.get(user_id))} for user_id in user_ids
    )


def email_verify_job_id(user_id: int) -> str:
    return enqueue_email_verify.id_for({"user_id": user_id})


def enqueue_validate_cv(*, upload_id: int, municipality: int, replaces: int | None = None) -> Enqueued | None:
    """`replaces`: the upload this one supersedes, whose job is dropped if it has not started;
    `municipality`: its owner's, which the job carries."""
    return _file_job(_VALIDATE_CV, upload_id, replaces, municipality)


def enqueue_optimize_profile_picture(
    *, upload_id: int, municipality: int, replaces: int | None = None
) -> Enqueued | None:
    return _file_job(_OPTIMIZE_PICTURE, upload_id, replaces, municipality)


def _file_job(producer: Producer, upload_id: int, replaces: int | None, municipality: int) -> Enqueued | None:
    producer._check(_naming(municipality))

    def enqueue() -> Enqueued:
        if replaces is not None:
            _drop_if_waiting(producer.queue.name, producer.id_for({"upload_id": replaces}))
        return producer.now(upload_id=upload_id, municipality=municipality)

    return after_commit(enqueue)


def _drop_if_waiting(queue_name: str, job_id: str) -> None:
    """Delete a job that has not started (queued, or waiting for a retry); a running one finishes
    and finds its upload superseded."""
    queue = clients.queue(queue_name)
    try:
        job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        return
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
        job.delete()


def enqueue_newsletter_many(
    *, newsletter_id: int, user_ids: Iterable[int], municipality: int, own_server: bool = False
) -> list[Enqueued] | None:
    """`own_server`: the municipality sends through its own mail server, at that server's pace
    (`jobs.mail.throttle.server_limits`), not the installation's."""
    calls = ({"newsletter_id": newsletter_id, "user_id": user_id, "municipality": municipality} for user_id in user_ids)
    return (_NEWSLETTER_OWN if own_server else _NEWSLETTER).many(calls)


def drop_held_newsletter(*, newsletter_id: int, municipality: int) -> int:
    """Delete the newsletter's jobs still waiting for their turn on `bulk-own` (a pause: each would
    otherwise take its server's turn to end without sending); returns how many. Jobs already in the
    queue or running end as before; `enqueue_newsletter_many` makes the deleted ones again."""
    connection, key = clients.redis(), tenancy.cap_key(BULK_OWN.name, municipality)
    match = _NEWSLETTER.id_for({"newsletter_id": newsletter_id, "user_id": "*"})
    held = [job_id.decode() for job_id, _ in connection.zscan_iter(rq_compat.rate_limited_key(key), match=match)]
    return sum(rq_compat.drop_held(connection, key, held[i : i + unique.BULK_BATCH])
               for i in range(0, len(held), unique.BULK_BATCH))  # fmt: skip


def enqueue_newsletter_test(*, newsletter_id: int, user_id: int, municipality: int) -> Enqueued | None:
    """`municipality`: the newsletter's (a test copy goes to a staff member, of any municipality)."""
    return _NEWSLETTER_TEST(newsletter_id=newsletter_id, user_id=user_id, test=True, municipality=municipality)


def enqueue_slack_alert(
    *, text: str, dedupe_key: str | None = None, municipality: int | None = None
) -> Enqueued | None:
    """`municipality`: post to its webhook (`jobs.config.tenancy.webhook_for`) instead of the platform's."""
    return _SLACK_ALERT(text=text, job_id=f"slack-{dedupe_key}" if dedupe_key else None, **_naming(municipality))


def schedule_alert_flush(*, queue_name: str, delay: int) -> Enqueued | None:
    return _ALERT_FLUSH(queue_name=queue_name, delay=delay)


def enqueue_cron_run(*, name: str, slot: datetime, queue_name: str) -> Enqueued:
    """Run cron `name` for `slot`; the slot is in the id, so a slot runs once however often it fires."""
    return unique.enqueue(
        queue_name,
        task_names.RUN_CRON,
        job_id=f"cron-{name}-{slot:%Y%m%dT%H%MZ}",
        kwargs={"name": name, "slot": slot.isoformat()},
    )


def enqueue_stored_call(*, queue_name: str, func: str, job_id: str, kwargs: dict, args=()) -> Enqueued:
    """Run a stored call again (a job retried by staff), under the same id and uniqueness rules."""
    return unique.enqueue(queue_name, func, job_id=job_id, kwargs=kwargs, args=list(args))
