"""Is the queue system healthy? One answer for `manage.py queues_health` and `/health`.

A check is `ok`, `warn` (worth fixing, not an outage: the load balancer keeps the node) or `fail`.
Details name queues, counts and settings' names, never URLs or secrets. They are written in the
active language: the staff's health page and the Slack alarms read them in Spanish, while the report
for monitors (`/health/jobs`, `manage.py queues_health`) is always English.

(django-health-check was tried first: its view answers 500 on a warning, so a Redis without
persistence would take every node out of the load balancer.)
"""

from dataclasses import asdict, dataclass

import django_rq
from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from redis.exceptions import RedisError, ResponseError

from jobs.config import crons, policies
from jobs.enqueue import clients
from jobs.observability import reads
from jobs.rq_compat import KEY_PREFIX, now


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str


VERDICT_TTL = 10  # seconds a caller without the token or a login gets the same verdict


def health_report() -> dict:
    with translation.override("en"):
        checks = health_checks()
    return {"healthy": all(check.status != "fail" for check in checks), "checks": [asdict(c) for c in checks]}


def verdict() -> bool:
    """Healthy or not, for a caller who may not see the report: only the checks that can fail (no
    counts, no settings), computed at most once every VERDICT_TTL seconds across every web node, so
    a flood of strangers costs a Redis read each."""
    connection = clients.redis()
    key = f"{settings.RQ_KEY_PREFIX}:health-verdict"
    try:
        known = connection.get(key)
        if known is None:
            known = b"1" if all(check.status != "fail" for check in health_checks(details=False)) else b"0"
            connection.set(key, known, ex=VERDICT_TTL)
    except RedisError:
        return False
    return known == b"1"


def health_checks(*, details: bool = True) -> list[Check]:
    """Every check; without `details`, only those that can fail (the verdict's)."""
    connection = clients.redis()
    try:
        connection.ping()
    except RedisError as error:
        return [Check("redis", "fail", _("Redis does not answer (%(error)s)") % {"error": type(error).__name__})]
    checks = [_redis_identity(connection), *(_redis_durability(connection) if details else ())]
    maintenance = clients.queue(policies.MAINTENANCE.name)  # django-rq's own would connect anew at each call
    scheduler = django_rq.get_scheduler(maintenance.name, queue=maintenance, connection=maintenance.connection)
    checks.append(Check("scheduler", "ok", _("rqscheduler is running")) if scheduler.is_alive()
                  else Check("scheduler", "fail", _("no rqscheduler process has beaten its heart recently")))  # fmt: skip
    missing = [name for name in crons.SPECS if scheduler.cron_entry(name) is None]
    checks.append(Check("crons", "fail", _("not registered: %(crons)s (run register_crons)") % {"crons": ", ".join(missing)})
                  if missing else Check("crons", "ok", _("%(n)d registered") % {"n": len(crons.SPECS)}))  # fmt: skip
    for name, policy in policies.QUEUES.items():
        checks += queue_checks(reads.queue_stats(name)) if details else [workers_check(policy, reads.workers(name))]
    return checks


def workers_check(policy: policies.QueuePolicy, workers: list[reads.WorkerInfo]) -> Check:
    live = [worker for worker in workers if worker.alive]
    if policy.in_process:
        processes = ngettext("%(n)d process", "%(n)d processes", len(live)) % {"n": len(live)}
        detail = _("%(slots)d of %(max)d slots in %(processes)s, %(busy)d busy") % {
            "slots": sum(worker.slots for worker in live), "processes": processes,
            "max": policy.concurrency * max(len(live), 1),  # each process (`rqworker --processes`) has all the slots
            "busy": sum(worker.busy for worker in live),
        }  # fmt: skip
    else:
        detail = _("%(live)d of %(max)d workers alive") % {"live": len(live), "max": policy.concurrency}
    return Check(f"{policy.name}.workers", "ok" if live else "fail", detail)


def queue_checks(stats: reads.QueueStats) -> list[Check]:
    policy, name = stats.policy, stats.name
    found = [workers_check(policy, stats.workers)]
    if stats.paused:  # on purpose, so a warning: jobs wait until someone resumes it
        since = f"{timezone.localtime(stats.paused.since):%d/%m/%Y %H:%M:%S}"
        detail = _("paused since %(since)s by %(who)s") % {"since": since, "who": stats.paused.by}
        found.append(Check(f"{name}.paused", "warn", detail))
    waited = (now() - stats.oldest_waiting).total_seconds() if stats.oldest_waiting else 0
    found.append(Check(f"{name}.backlog", "warn" if waited > policy.max_wait else "ok",
                       _("oldest waiting %(waited)d s (limit %(limit)d s), %(queued)d queued") % {
                           "waited": round(waited), "limit": policy.max_wait,
                           "queued": stats.counts["queued"] + stats.counts["rate_limited"]}))  # fmt: skip
    done, failed = stats.finished_last_hour, stats.failed_last_hour
    rate = failed / (done + failed) if done + failed else 0.0
    breached = done + failed >= policy.min_volume and rate > policy.max_failure_rate
    found.append(Check(f"{name}.failures", "warn" if breached else "ok",
                       _("%(failed)d failed, %(done)d finished in the last hour (%(rate)s; limit %(limit)s)") % {
                           "failed": failed, "done": done, "rate": f"{rate:.0%}", "limit": f"{policy.max_failure_rate:.0%}"}))  # fmt: skip
    return found


def _redis_identity(connection) -> Check:
    db = connection.connection_pool.connection_kwargs.get("db", 0)
    if KEY_PREFIX != settings.RQ_KEY_PREFIX:
        return Check("redis", "fail", _("keys go under %(actual)r, not %(wanted)r") % {
            "actual": KEY_PREFIX, "wanted": settings.RQ_KEY_PREFIX})  # fmt: skip
    return Check(
        "redis", "ok", _("reachable, logical DB %(db)s, keys under %(prefix)s:") % {"db": db, "prefix": KEY_PREFIX}
    )


def _redis_durability(connection) -> list[Check]:
    try:
        policy = connection.config_get("maxmemory-policy").get("maxmemory-policy", "")
        aof = connection.config_get("appendonly").get("appendonly", "no")
        save = connection.config_get("save").get("save", "")
    except ResponseError:  # managed Redis often forbids CONFIG
        return [Check("redis.config", "warn", _("CONFIG GET is not allowed: cannot check eviction and persistence"))]
    evicts, forgets = policy != "noeviction", not (aof == "yes" or save)
    eviction = {"policy": policy}
    persistence = {"aof": aof, "save": save}
    return [
        Check("redis.eviction", "warn" if evicts else "ok",
              _("maxmemory-policy is %(policy)s: Redis may drop jobs when full") % eviction if evicts
              else _("maxmemory-policy is %(policy)s") % eviction),
        Check("redis.persistence", "warn" if forgets else "ok",
              _("appendonly %(aof)s, save '%(save)s': a restart loses every job") % persistence if forgets
              else _("appendonly %(aof)s, save '%(save)s'") % persistence),
    ]  # fmt: skip
