"""Every queue and its policy, declared once.

Plain data on purpose: settings derive `RQ_QUEUES` from it, producers read their retry and TTLs
from it, and the process definitions (`ecosystem/`) are checked against it. It imports neither
Django nor rq, so reading it can never import rq before `RQ_KEY_PREFIX` is set.
"""

from dataclasses import dataclass, replace

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class QueuePolicy:
    name: str
    concurrency: int  # jobs run at once: slots of one process (in_process) or forking worker processes
    timeout: int  # seconds a single attempt may run
    # I/O-bound queues run their slots as threads of one light process (`jobs.runtime.slots`); queues that
    # handle untrusted input fork a work-horse per job, so a hostile job can only kill itself.
    in_process: bool = False
    retry_max: int = 0  # retries after the first attempt
    # Seconds before each retry: one per retry, or a single one for every retry. RQ reads a list of
    # any other length from its end (`intervals[len - retries_left]`, the first repeating when it is
    # short, the first ones skipped when it is long), so such a schedule is refused.
    retry_intervals: tuple[int, ...] = ()
    result_ttl: int = HOUR  # how long a finished job stays in Redis
    failure_ttl: int = DAY  # how long a failed job stays in Redis
    alert_on_final_failure: bool = True  # the slack queue never alerts about itself
    # Final failures are gathered this long after the first one, then sent as one Slack message:
    # the failure itself when it is alone, a summary when there are several (an alert storm).
    alert_window: int = 60
    expected_errors: tuple[str, ...] = ()  # exception type names archived without an alert
    # Service levels, watched by /health, `queues_health` and the SLO alarms (one Slack alert per breach):
    max_wait: int = 300  # seconds the oldest waiting job may wait
    max_failure_rate: float = 0.25  # of the last hour's finished + failed jobs...
    min_volume: int = 20  # ...once there were at least this many
    memory_limit_mb: int = 0  # forking workers: memory a job may add to its work-horse (0: no limit)
    smtp_throttled: bool = False  # in-process slots: a job is taken only on its turn under the SMTP limit
    # In-process slots: each municipality's jobs wait aside until its own mail server's turn moves them to the
    # queue (`jobs.mail.throttle.promote`, which an idle slot runs); the slots take what the queue holds.
    paced: bool = False
    # Fairness between municipalities: while several share the installation, at most this many jobs of one
    # municipality are queued or running at once; the rest wait their turn aside (rq's rate limit), so
    # another municipality's job is queued behind this many at most, however big a burst (0: no cap).
    tenant_cap: int = 0

    def __post_init__(self):
        if self.retry_max and len(self.retry_intervals) not in (1, self.retry_max):
            raise ValueError(
                f"queue {self.name}: retry_intervals {self.retry_intervals} for retry_max {self.retry_max}: "
                f"give one interval per retry ({self.retry_max}) or a single one for all of them"
            )


# An attempt that sent a message may wait 10 minutes for the server's answer (RFC 5321 §4.5.3.2.6:
# `jobs.mail.smtp.DATA_TIMEOUT`; given up sooner, a slow server gets one copy per attempt), then a minute to
# record the delivery through a database outage (`jobs.tasks.sending.RECORD_TIME`); the rest of the SMTP
# conversation (`EMAIL_TIMEOUT` per command) fits in the last one.
SMTP_JOB_TIMEOUT = 12 * 60

EMAIL = QueuePolicy(
    name="email", concurrency=5, timeout=SMTP_JOB_TIMEOUT, retry_max=5, retry_intervals=(1, 5, 15, 60, 300),
    in_process=True, tenant_cap=10,
)  # fmt: skip
SLACK = QueuePolicy(
    name="slack", concurrency=10, timeout=30, retry_max=3, retry_intervals=(2,), alert_on_final_failure=False,
    max_wait=60, in_process=True,
)  # fmt: skip
MAINTENANCE = QueuePolicy(
    name="maintenance", concurrency=1, timeout=15 * 60, retry_max=3, retry_intervals=(30, 120, 600), max_wait=HOUR
)
FILES = QueuePolicy(
    name="files", concurrency=2, timeout=5 * 60, retry_max=3, retry_intervals=(5, 30, 120), max_wait=15 * 60,
    memory_limit_mb=512,  # an uploaded file is hostile until proven otherwise: it may cost its own job only
)  # fmt: skip

# Newsletters: one job per recipient, in slots of their own (so verification emails never wait behind
# a campaign), paced by the SMTP rate limit (`jobs.mail.throttle`): a slot takes a job only on its turn, so
# an hour's cap delays jobs in the queue without a timeout or a retry. A finished job leaves nothing in Redis (the
# delivery row is the record), and a 50,000-recipient campaign may take hours.
BULK = QueuePolicy(
    name="bulk", concurrency=4, timeout=SMTP_JOB_TIMEOUT, retry_max=5, retry_intervals=(30, 120, 600, 1800, 3600),
    in_process=True, result_ttl=0, max_wait=12 * HOUR, max_failure_rate=0.05, min_volume=100, smtp_throttled=True,
)  # fmt: skip

# The newsletters of a municipality with its own mail server: each server's pace, which neither takes the
# installation's turns nor waits for them (`jobs.mail.throttle`).
BULK_OWN = replace(BULK, name="bulk-own", smtp_throttled=False, paced=True)
BULKS = (BULK.name, BULK_OWN.name)  # a newsletter's jobs are on one of these

QUEUES: dict[str, QueuePolicy] = {policy.name: policy for policy in (EMAIL, SLACK, BULK, BULK_OWN, MAINTENANCE, FILES)}
