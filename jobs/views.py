"""Endpoints for machines: /health for load balancers, /health/jobs for monitors, /metrics for Prometheus."""

import secrets

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from jobs.enqueue import clients
from jobs.observability.health import health_report, verdict
from jobs.observability.metrics import registry


@never_cache
@require_GET
def health(request):
    """For load balancers: can this web node serve (database and Redis answer)? A worker or cron
    problem does not take web nodes out of rotation. Names nothing but what failed."""
    failing = [name for name, check in (("database", _database_answers), ("redis", _redis_answers)) if not check()]
    return JsonResponse({"ok": not failing, "failing": failing}, status=503 if failing else 200)


@never_cache
@require_GET
def jobs_health(request):
    """For monitors: the job system's report, as `manage.py queues_health --json` (200/503). Its
    details (workers, crons, Redis settings) need the metrics token or a staff login; anyone else
    gets the verdict alone, which costs next to nothing (`jobs.observability.health.verdict`)."""
    if not _may_read_details(request):
        healthy = verdict()
        return JsonResponse({"healthy": healthy}, status=200 if healthy else 503)
    report = health_report()
    return JsonResponse(report, status=200 if report["healthy"] else 503)


@never_cache
@require_GET
def metrics(request):
    """Prometheus text format, for `Authorization: Bearer <METRICS_TOKEN>` or staff who may see the dashboard."""
    if not _may_read_details(request):
        return HttpResponse("metrics need a token or a staff login\n", status=401, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


def _may_read_details(request) -> bool:
    token, offered = settings.METRICS_TOKEN, request.headers.get("Authorization", "")
    if token and offered.startswith("Bearer ") and secrets.compare_digest(offered[7:].encode(), token.encode()):
        return True
    return request.user.has_perm("jobs.view_dashboard")


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _redis_answers() -> bool:
    try:
        return bool(clients.redis().ping())
    except RedisError:
        return False
