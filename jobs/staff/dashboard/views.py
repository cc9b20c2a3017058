"""The queue dashboard's pages. Wrapped by `admin_site.admin_view` (staff login, CSRF, never cached);
each view checks its own permission, and only POSTs change anything.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Callable

from django.apps import apps
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Min
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods
from rq.job import JobStatus
from jobs.rq_compat import utcparse

from jobs.enqueue import clients

from jobs.staff import operations

from jobs.config import pauses, policies

from jobs.observability import series
from jobs.failures.final import fingerprint
from jobs.staff.audit import actions_for_job
from jobs.staff.dashboard import charts
from jobs.staff.dashboard.labels import state_label
from jobs.observability import reads
from jobs.models import DeadLetter

MASK = "•••"


def permission(codename: str):
    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perm(f"jobs.{codename}"):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def _queue_name(name: str) -> str:
    if name not in policies.QUEUES:
        raise Http404
    return name


def _context(request, admin_site, title, **extra):
    return {
        **admin_site.each_context(request),
        "title": title,
        "opts": {"app_label": "jobs", "app_config": {"verbose_name": _("Queues and jobs")}},
        "can_operate": request.user.has_perm("jobs.operate_jobs"),
        "can_destroy": request.user.has_perm("jobs.destroy_jobs"),
        "can_view_payloads": _may_see_payloads(request),
        **extra,
    }


@permission("view_dashboard")
@require_http_methods(["GET"])
def overview(request, admin_site):
    data = reads.overview()
    warnings = [
        _("No live worker listens on %(queue)s.") % {"queue": stats.name} for stats in data.queues if not stats.live_workers
    ]
    if not data.scheduler_alive:
        warnings.append(_("The cron scheduler (rqscheduler) is not running."))
    warnings += [
        _("Dead-man alarm: %(cron)s has not completed since %(since)s.") % {"cron": info.spec.name, "since": info.alarm_since}
        for info in data.crons
        if info.alarm_since
    ]
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/overview.html",
        _context(request, admin_site, _("Queues"), overview=data, warnings=warnings, states=reads.STATES,
                 charts={name: _charts(name, hours=False) for name in policies.QUEUES}, legend=charts.legend()),  # fmt: skip
    )


def _charts(queue_name: str, *, hours: bool = True) -> dict:
    """The queue's chart of the last hour per minute (and of the last 7 days per hour)."""
    connection, moment = clients.redis(), timezone.now()
    drawn = {"minutes": charts.chart(series.minutes(connection, queue_name, moment), hourly=False)}
    if hours:
        drawn["hours"] = charts.chart(series.hours(connection, queue_name, moment), hourly=True)
    return drawn


@permission("view_dashboard")
@require_http_methods(["GET"])
def job_list(request, admin_site, queue_name, state):
    queue_name = _queue_name(queue_name)
    if state not in reads.STATES:
        raise Http404
    number = int(request.GET.get("page", "1")) if request.GET.get("page", "1").isdigit() else 1
    search = request.GET.get("q", "").strip()
    result = reads.page(queue_name, state, number, search=search, func=request.GET.get("func", ""),
                        user_ids=_users_matching(search) if _may_see_payloads(request) else ())  # fmt: skip
    rows = [_row(job, _may_see_payloads(request)) for job in result.jobs]
    if state == "scheduled":
        runs_at = reads.scheduled_at(clients.queue(queue_name), [row["job"].id for row in rows])
        for row in rows:
            row["runs_at"] = runs_at.get(row["job"].id)
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/job_list.html",
        _context(
            request, admin_site, _("%(queue)s: %(state)s") % {"queue": queue_name, "state": state_label(state)},
            queue_name=queue_name, state=state, page=result, states=reads.STATES,
            counts={s: reads.count(clients.queue(queue_name), s) for s in reads.STATES},
            actions=[(key, action.label) for key, action in ACTIONS.items() if state in action.states],
            rows=rows, charts=_charts(queue_name), legend=charts.legend(), search=search, cleanable=operations.CLEANABLE,
            paused=pauses.paused(clients.redis()).get(queue_name), func=request.GET.get("func", ""), funcs=sorted({_func(job) for job in result.jobs}),
        ),  # fmt: skip
    )


@permission("view_dashboard")
@require_http_methods(["GET"])
def job_detail(request, admin_site, queue_name, job_id):
    queue_name = _queue_name(queue_name)
    job = reads.fetch_job(clients.queue(queue_name), job_id)
    dead_letter = DeadLetter.objects.filter(job_id=job_id).order_by("-failed_at").first()
    if job is None and dead_letter is None:
        raise Http404
    status = job.get_status(refresh=False).value if job else "gone"
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/job_detail.html",
        _context(
            request, admin_site, job_id, queue_name=queue_name, job=job, row=_row(job, _may_see_payloads(request)) if job else None,
            status=status, dead_letter=dead_letter, actions_trail=actions_for_job(job_id)[:50],
            related=_related(job, dead_letter) if _may_see_payloads(request) else None,  # the id is a payload
            actions=[(key, action.label) for key, action in ACTIONS.items() if status in action.states],
        ),  # fmt: skip
    )


@permission("view_dashboard")
@require_http_methods(["GET", "POST"])
def triage(request, admin_site, queue_name):
    """Open dead letters of a queue grouped by error, and a filtered bulk retry with a count first."""
    queue_name = _queue_name(queue_name)
    exc_type = request.POST.get("exc_type") or request.GET.get("exc_type", "")
    since = _parse_since(request.POST.get("since") or request.GET.get("since", ""))
    rows = operations.dead_letters_matching(queue_name=queue_name, exc_type=exc_type, since=since)
    groups = (
        operations.dead_letters_matching(queue_name=queue_name)
        .values("exc_type")
        .annotate(count=Count("id"), first=Min("failed_at"), last=Max("failed_at"))
        .order_by("-count")
    )
    if request.method == "POST":
        if not request.user.has_perm("jobs.operate_jobs"):
            raise PermissionDenied
        if request.POST.get("confirm") == "yes":
            detail = _("failures by error: %(error)s since %(since)s") % {
                "error": exc_type or _("any"), "since": date_format(timezone.localtime(since), "SHORT_DATETIME_FORMAT") if since else _("the start")
            }  # fmt: skip
            retried, refused = operations.dead_letters_retry(
                rows=list(rows), user=request.user, reason=request.POST.get("reason", ""), detail=detail
            )
            messages.success(request, ngettext("%(count)d job enqueued again.", "%(count)d jobs enqueued again.",
                                               len(retried)) % {"count": len(retried)})  # fmt: skip
            for why in refused:
                messages.error(request, why)
            return HttpResponseRedirect(request.path)
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/triage.html",
        _context(
            request, admin_site, _("%(queue)s: failures by error") % {"queue": queue_name}, queue_name=queue_name,
            groups=groups, exc_type=exc_type, since=request.POST.get("since") or request.GET.get("since", ""),
            matching=rows.count(), confirming=request.method == "POST",
        ),  # fmt: skip
    )


CLEAN_AGES = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


@permission("view_dashboard")
@require_http_methods(["POST"])
def queue_action(request, admin_site, queue_name, name):
    """Pause, resume or clean a queue: a POST shows what will happen (for clean, how many jobs);
    a POST with `confirm=yes` does it. Pause and resume need `operate_jobs`, clean `destroy_jobs`."""
    queue_name = _queue_name(queue_name)
    needed = {"pause": "operate_jobs", "resume": "operate_jobs", "clean": "destroy_jobs"}.get(name)
    if needed is None:
        raise Http404
    if not request.user.has_perm(f"jobs.{needed}"):
        raise PermissionDenied
    back = reverse(f"{admin_site.name}:jobs_dashboard_list", args=[queue_name, "queued"])
    states = [state for state in request.POST.getlist("states") if state in operations.CLEANABLE]
    age = request.POST.get("age", "")
    if name == "clean" and (not states or age not in CLEAN_AGES):
        messages.warning(request, _("Choose the states and the age of the jobs to clean."))
        return HttpResponseRedirect(back)
    before = timezone.now() - CLEAN_AGES[age] if name == "clean" else None
    reason, by = request.POST.get("reason", ""), request.user.get_username()
    if request.POST.get("confirm") == "yes":
        if name == "pause":
            operations.queue_pause(queue_name=queue_name, user=request.user, by=by, reason=reason)
            messages.success(request, _("%(queue)s is paused: its jobs wait until you resume it.") % {"queue": queue_name})
        elif name == "resume":
            operations.queue_resume(queue_name=queue_name, user=request.user, by=by, reason=reason)
            messages.success(request, _("%(queue)s is running again.") % {"queue": queue_name})
        else:
            done = operations.queue_clean(queue_name=queue_name, states=states, before=before, user=request.user, reason=reason)
            messages.success(request, ngettext("%(n)d old job deleted.", "%(n)d old jobs deleted.", done) % {"n": done})
        return HttpResponseRedirect(back)
    count = len(operations.jobs_ended_before(queue_name=queue_name, states=states, before=before)) if name == "clean" else 0
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/queue_confirm.html",
        _context(
            request, admin_site, {"pause": _("Pause the queue"), "resume": _("Resume the queue"), "clean": _("Clean old jobs")}[name],
            queue_name=queue_name, action_name=name, count=count, states=states, state_labels=[state_label(s) for s in states],
            age=age, before=before, back=back,
        ),  # fmt: skip
    )


@dataclass(frozen=True)
class Action:
    label: str
    permission: str
    states: frozenset
    run: Callable


ACTIONS = {
    "retry": Action(_("Retry"), "operate_jobs", frozenset({"failed", "stopped", "canceled"}), operations.jobs_retry),
    "promote": Action(_("Run now"), "operate_jobs", frozenset({"scheduled"}), operations.jobs_promote),
    "cancel": Action(_("Cancel"), "operate_jobs", frozenset({"queued", "scheduled", "deferred"}), operations.jobs_cancel),
    "delete": Action(_("Delete"), "destroy_jobs", frozenset(s.value for s in JobStatus), operations.jobs_delete),
    "empty": Action(_("Empty the queue"), "destroy_jobs", frozenset(), None),  # the whole queue, never a selection
}


@permission("view_dashboard")
@require_http_methods(["POST"])
def action(request, admin_site, queue_name, name):
    """POST the selection: a confirmation page lists what will change; POST `confirm=yes` does it."""
    queue_name = _queue_name(queue_name)
    chosen = ACTIONS.get(name)
    if chosen is None:
        raise Http404
    if not request.user.has_perm(f"jobs.{chosen.permission}"):
        raise PermissionDenied
    queue = clients.queue(queue_name)
    scope, state = request.POST.get("scope", "selected"), request.POST.get("state", "")
    if name == "empty":
        job_ids = []
        affected = reads.count(queue, "queued")
    elif scope == "all" and state in reads.STATES:
        job_ids = reads.job_ids(queue, state, 0, reads.count(queue, state))
        affected = len(job_ids)
    else:
        job_ids = request.POST.getlist("job_ids")
        affected = len(job_ids)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse(f"{admin_site.name}:jobs_dashboard_overview")
    if not affected:
        messages.warning(request, _("Select at least one job first."))
        return HttpResponseRedirect(back)
    if request.POST.get("confirm") != "yes":
        return TemplateResponse(
            request,
            "admin/jobs/dashboard/confirm.html",
            _context(
                request, admin_site, _("Confirm: %(action)s") % {"action": chosen.label}, queue_name=queue_name,
                action_name=name, action_label=chosen.label, job_ids=job_ids[:200], affected=affected, scope=scope,
                state=state, next=back,
            ),  # fmt: skip
        )
    reason = request.POST.get("reason", "")
    if name == "empty":
        done = operations.queue_empty(queue_name=queue_name, user=request.user, reason=reason)
    else:
        done = len(chosen.run(queue_name=queue_name, job_ids=job_ids, user=request.user, reason=reason))
    message = ngettext("%(action)s: %(done)d of %(count)d job.", "%(action)s: %(done)d of %(count)d jobs.", affected)
    messages.success(request, message % {"action": chosen.label, "done": done, "count": affected})
    return HttpResponseRedirect(back)


def _users_matching(search: str) -> list[int]:
    """The users whose email holds `search` (a job's related user): at most 100."""
    if len(search) < 3:
        return []
    return list(get_user_model().objects.filter(email__icontains=search).values_list("pk", flat=True)[:100])


def _func(job) -> str:
    try:
        return job.func_name
    except Exception:
        return "?"


def _may_see_payloads(request) -> bool:
    return request.user.has_perm("jobs.view_payloads")


def _row(job, show_payload: bool) -> dict:
    """What a page shows of a job: payload values masked unless the user may see them."""
    try:
        kwargs, args = dict(job.kwargs), list(job.args)
    except Exception:
        kwargs, args = {}, []
    if not show_payload:
        kwargs, args = {key: MASK for key in kwargs}, [MASK for _ in args]
    result = job.latest_result() if job.get_status(refresh=False) in (JobStatus.FAILED, JobStatus.FINISHED) else None
    error = result.exc_string if result and result.exc_string else ""
    exc_type, message = fingerprint(error) if error else ("", "")
    failures = job.meta.get("failures", [])
    if not exc_type and failures:  # waiting for a retry: the last attempt's error
        exc_type, _sep, message = failures[-1]["error"].partition(": ")
    return {
        "job": job,
        "func": _func(job),
        "args": args,
        "kwargs": kwargs,
        "exc_type": exc_type,
        "message": message if show_payload else "",
        "traceback": error if show_payload else "",
        "result": result.return_value if result and not error else None,
        "attempts": [
            {"at": datetime.fromisoformat(attempt["at"]), "error": attempt["error"]} for attempt in job.meta.get("failures", [])
        ],
        "progress": job.meta.get("progress"),
        "log": [{"at": utcparse(entry["at"]), "line": entry["line"]} for entry in job.meta.get("log", [])] if show_payload else [],
    }


def _related(job, dead_letter):
    model, object_id = ("", "")
    if dead_letter and dead_letter.related_model:
        model, object_id = dead_letter.related_model, dead_letter.related_id
    elif job is not None:
        try:
            if "user_id" in job.kwargs:
                model, object_id = "accounts.user", str(job.kwargs["user_id"])
        except Exception:
            pass
    if not model:
        return None
    meta = apps.get_model(model)._meta
    return {"label": f"{meta.verbose_name} #{object_id}",
            "url": reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[object_id])}  # fmt: skip


def _parse_since(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
