"""Reads that follow a job or a person across every queue, every state and the dead-letter archive
(the dashboard's search, a user's admin page), and how a retry from the archive ended.

Like `reads`, plain reads that change nothing. A search is bounded: ids are matched in the newest
`ID_WINDOW` jobs of each queue and state (only ids travel), payloads (whom a job concerns, its
errors) in the newest `PAYLOAD_WINDOW`, and at most `limit` results come back, newest first.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import Q
from rq.job import Job, JobStatus

from jobs.config import policies, tenancy
from jobs.enqueue import clients
from jobs.models import DeadLetter
from jobs.observability import reads, retries

SEARCH_LIMIT = 200
ID_WINDOW = 50_000  # newest job ids per queue and state an id search looks through
PAYLOAD_WINDOW = 1_000  # newest jobs per queue and state whose arguments and errors a search reads
PENDING = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@dataclass
class Hit:
    """A job found: its run in Redis (`job`), its final failure in the archive (`dead_letter`), or both."""

    queue: str
    job_id: str
    state: str  # the job's state in Redis, "archived" when only the archive holds the run
    func: str
    at: datetime | None  # when it last moved: ended, enqueued or created; for the archive, failed
    error: str  # the last error's type
    job: Job | None = None
    dead_letter: DeadLetter | None = None
    outcome: str = ""  # how the archived run's retry ended, as the page that shows the hit words it


@dataclass
class Found:
    hits: list[Hit]
    cut: bool  # more matched than were kept
    limit: int
    window: int = PAYLOAD_WINDOW


@dataclass(frozen=True)
class Query:
    """What to look for. `text`: a part of a job id, or of an error (its type only, unless `payloads`);
    `concerning`: job argument -> the values that name the person (user ids, upload ids, emails)."""

    text: str = ""
    concerning: Mapping[str, Collection] = field(default_factory=dict)
    payloads: bool = False
    municipality: int | None = None  # only the jobs that name it (`jobs.config.tenancy`)

    def matches(self, job: Job) -> bool:
        if self.municipality is not None and tenancy.municipality_of_job(job) != self.municipality:
            return False
        return _id_matches(self.text, job.id) or self._error_matches(job) or self._concerns(job)

    def _error_matches(self, job: Job) -> bool:
        if not self.text:
            return False
        for attempt in job.meta.get("failures", []):
            error = attempt.get("error", "") if self.payloads else attempt.get("error", "").partition(":")[0]
            if self.text.lower() in error.lower():
                return True
        return False

    def _concerns(self, job: Job) -> bool:
        if not self.concerning:
            return False
        try:
            kwargs = job.kwargs
        except Exception:
            return False
        return any(
            _lowered(kwargs[arg]) in _lowered_set(self.concerning[arg]) for arg in self.concerning if arg in kwargs
        )

    def archive(self):
        """The archive's rows this query matches (a queryset)."""
        text = self.text
        conditions = [Q(job_id__icontains=text), Q(exc_type__icontains=text)] if text else []
        if text and self.payloads:
            conditions += [Q(exc_message__icontains=text), Q(traceback__icontains=text)]
        for arg, values in self.concerning.items():
            if arg == "email":  # typed by people: any case
                conditions += [Q(kwargs__email__iexact=value) for value in values]
            elif values:
                conditions.append(Q(**{f"kwargs__{arg}__in": list(values)}))
        if not conditions:
            return DeadLetter.objects.none()
        rows = DeadLetter.objects.filter(reduce(or_, conditions))
        if self.municipality is not None:
            rows = rows.filter(municipality=self.municipality)
        return rows.order_by("-failed_at")


def search(query: Query, *, limit: int = SEARCH_LIMIT) -> Found:
    """Every job in Redis and every archived failure the query matches, newest first, at most `limit`."""
    hits = _in_redis(query) if query.text or query.concerning else []
    runs = {(hit.job_id, hit.job.created_at): hit for hit in hits}
    archived = list(query.archive()[: limit + 1])
    for row in archived:
        hit = runs.get((row.job_id, row.job_created_at))
        if hit is not None:  # the same run, still in Redis (failed less than a day ago)
            hit.dead_letter = row
        else:
            hits.append(
                Hit(
                    queue=row.queue,
                    job_id=row.job_id,
                    state="archived",
                    func=row.func_name,
                    at=row.failed_at,
                    error=row.exc_type,
                    dead_letter=row,
                )  # fmt: skip
            )
    hits.sort(key=lambda hit: hit.at.timestamp() if hit.at else 0, reverse=True)
    return Found(hits=hits[:limit], cut=len(hits) > limit or len(archived) > limit, limit=limit)


def _in_redis(query: Query) -> list[Hit]:
    hits = []
    for queue_name in policies.QUEUES:
        queue = clients.queue(queue_name)
        candidates: dict[str, None] = {}
        exact = reads.fetch_job(queue, query.text) if query.text else None
        if exact is not None and exact.origin == queue_name:
            candidates[exact.id] = None
        for state in reads.STATES:
            ids = reads.job_ids(queue, state, 0, ID_WINDOW)
            candidates.update((job_id, None) for job_id in ids if _id_matches(query.text, job_id))
            if query.concerning or query.text:  # whom a job concerns and its errors are in its payload
                candidates.update((job_id, None) for job_id in ids[:PAYLOAD_WINDOW])
        for job in reads.fetch_jobs(queue, list(candidates)):
            if job.origin == queue_name and query.matches(job):
                hits.append(_hit(queue_name, job))
    return hits


def _hit(queue_name: str, job: Job) -> Hit:
    failures, status = job.meta.get("failures", []), job.get_status(refresh=False)
    retrying = status == JobStatus.SCHEDULED and retries.is_retrying(clients.queue(queue_name), job.id)
    return Hit(
        queue=queue_name,
        job_id=job.id,
        state="retrying" if retrying else status.value if status else "created",
        func=_func_name(job),
        at=job.ended_at or job.enqueued_at or job.created_at,
        error=failures[-1]["error"].partition(":")[0] if failures else "",
        job=job,
    )


def _func_name(job: Job) -> str:
    try:
        return job.func_name
    except Exception:
        return "?"


def _id_matches(text: str, job_id: str) -> bool:
    return bool(text) and text.lower() in job_id.lower()


def _lowered(value) -> str:
    return str(value).strip().lower()


def _lowered_set(values: Collection) -> set[str]:
    return {_lowered(value) for value in values}


# --- how a retry from the archive ended ---------------------------------------------------------


@dataclass(frozen=True)
class RetryOutcome:
    """How the run a retry enqueued ended, as far as can be known now.

    `kind`: "waiting" (in Redis, not ended), "sent" (finished), "failed" (failed again), "ended"
    (canceled or stopped: `job_state` says which), "gone" (Redis forgot the run and the archive has
    no failure of it: every final failure is archived, so it did not fail again), "unknown" (retried
    before runs were recorded)."""

    kind: str
    job_state: str = ""
    dead_letter: DeadLetter | None = None  # the run's own final failure, when it failed again


def retry_outcome(row: DeadLetter) -> RetryOutcome | None:
    """None when the row was never retried. Read, not recorded: the run's final failure (the archive
    keeps it 90 days) or its job in Redis (a day when failed, an hour when finished)."""
    if row.retried_at is None:
        return None
    if row.retry_created_at is None:
        return RetryOutcome("unknown")
    again = DeadLetter.objects.filter(job_id=row.job_id, job_created_at=row.retry_created_at).first()
    if again is not None:
        return RetryOutcome("failed", dead_letter=again)
    job = reads.fetch_job(clients.queue(row.queue), row.job_id)
    if job is None or job.created_at != row.retry_created_at:  # a later run took the id: this one ended
        return RetryOutcome("gone")
    status = job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        return RetryOutcome("sent", status.value)
    if status == JobStatus.FAILED:  # failed for good a moment ago: archived within the minute
        return RetryOutcome("failed", status.value)
    if status in PENDING or status is None:
        return RetryOutcome("waiting", status.value if status else "created")
    return RetryOutcome("ended", status.value)
