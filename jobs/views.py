"""Endpoints for machines: /health for load balancers, /metrics for Prometheus."""

import secrets

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs.health import health_report
from jobs.metrics import registry


@never_cache
@require_GET
def health(request):
    """The same report as `manage.py queues_health --json`: 200 when healthy, 503 when not. No secrets."""
    report = health_report()
    return JsonResponse(report, status=200 if report["healthy"] else 503)


@never_cache
@require_GET
def metrics(request):
    """Prometheus text format, for `Authorization: Bearer <METRICS_TOKEN>` or staff who may see the dashboard."""
    token, offered = settings.METRICS_TOKEN, request.headers.get("Authorization", "")
    bearer = bool(token) and offered.startswith("Bearer ")
    if not (bearer and secrets.compare_digest(offered[7:].encode(), token.encode())) and not request.user.has_perm(
        "jobs.view_dashboard"
    ):
        return HttpResponse("metrics need a token or a staff login\n", status=401, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
