"""The dashboard's pages that read: the overview of every queue, a queue's jobs by state, one job.
Their changes are in `actions`."""

from datetime import datetime, timedelta

from django.apps import apps
from django.contrib.auth import get_user_model
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods
from rq.job import JobStatus

from jobs.config import pauses, policies, tenancy
from jobs.enqueue import clients
from jobs.failures.final import fingerprint
from jobs.models import DeadLetter
from jobs.observability import health, reads, retries, series
from jobs.rq_compat import utcparse
from jobs.staff import operations
from jobs.staff.audit import actions_for_job
from jobs.staff.dashboard import charts
from jobs.staff.dashboard.access import context, known_queue, limited_to, may_see_payloads, permission, whole_platform
from jobs.staff.dashboard.actions import ACTIONS, CLEAN_AGES
from jobs.staff.dashboard.labels import state_label

MASK = "•••"


@permission("view_dashboard")
@require_http_methods(["GET"])
def overview(request, admin_site):
    """Every queue's counts, workers and charts, and the crons; of one municipality's jobs (for staff
    limited to it, or who chose it), their counts and charts alone: workers, crons and queue-wide
    actions are every municipality's."""
    shown = _shown_municipality(request)
    if shown is None:
        data = reads.overview()
        warnings = _warnings(request, data)
    else:
        queues = [reads.queue_stats(name, shown) for name in policies.QUEUES]
        data, warnings = reads.Overview(queues=queues, crons=[], scheduler_alive=True), []
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/overview.html",
        context(
            request,
            admin_site,
            _("Queues"),
            overview=data,
            warnings=warnings,
            states=reads.STATES,
            limited=shown,
            window=reads.NAME_FILTER_WINDOW,
            charts={name: _charts(name, hours=False, municipality=shown) for name in policies.QUEUES},
            legend=charts.legend(),
            **_municipality_choice(request, shown),
        ),  # fmt: skip
    )


def _warnings(request, data: reads.Overview) -> list[str]:
    warnings = [
        _("No live worker listens on %(queue)s.") % {"queue": stats.name}
        for stats in data.queues
        if not stats.live_workers
    ]
    warnings += [_retrying_warning(request, stats) for stats in data.queues if stats.counts["retrying"]]
    if not data.scheduler_alive:
        warnings.append(_("The cron scheduler (rqscheduler) is not running."))
    warnings += [
        _("Dead-man alarm: %(cron)s has not completed since %(since)s.")
        % {"cron": info.spec.name, "since": info.alarm_since}
        for info in data.crons
        if info.alarm_since
    ]
    return warnings


def _shown_municipality(request) -> int | None:
    """The municipality whose jobs a page shows: the one a staff member is limited to; for the
    others, the one they chose (`?municipality=<id>`); None: every municipality's."""
    if (limited := limited_to(request)) is not None:
        return limited
    chosen = request.GET.get("municipality", "")
    return int(chosen) if chosen.isdigit() and int(chosen) in tenancy.names() else None


def _municipality_choice(request, shown: int | None) -> dict:
    """What the pages show of the municipality filter: the one shown, and the choices (staff who
    see every municipality, when there are several)."""
    names = tenancy.names()
    choices = sorted(names.items(), key=lambda item: item[1]) if limited_to(request) is None and len(names) > 1 else []
    return {
        "shown": shown,
        "shown_name": names.get(shown, "") if shown is not None else "",
        "choices": choices,
        "filter_query": f"?municipality={shown}" if choices and shown is not None else "",  # kept by the links
    }


HEALTH_LABELS = {"ok": _("fine"), "warn": _("attention"), "fail": _("failing")}


@permission("view_dashboard")
@whole_platform
@require_http_methods(["GET"])
def health_page(request, admin_site):
    """The checks monitors read at /health/jobs, for people: in Spanish, worst first."""
    checks = sorted(health.health_checks(), key=lambda check: ("fail", "warn", "ok").index(check.status))
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/health.html",
        context(
            request, admin_site, _("Health checks"), checks=[(check, HEALTH_LABELS[check.status]) for check in checks]
        ),
    )


def _retrying_warning(request, stats) -> str:
    """Failures waiting for another attempt are not failures yet, but staff should see them coming."""
    n, queue = stats.counts["retrying"], clients.queue(stats.name)
    text = ngettext(
        "%(n)d job of %(queue)s failed and waits for another attempt",
        "%(n)d jobs of %(queue)s failed and wait for another attempt",
        n,
    ) % {"n": n, "queue": stats.name}
    first_ids = reads.job_ids(queue, "retrying", 0, 1)
    first = reads.fetch_job(queue, first_ids[0]) if first_ids else None
    if first is None:
        return text + "."
    row, runs_at = _row(first, may_see_payloads(request)), reads.scheduled_at(queue, first_ids)[first.id]
    return _("%(text)s; the next one at %(at)s, last error: %(error)s.") % {
        "text": text,
        "at": date_format(timezone.localtime(runs_at), "H:i:s"),
        "error": row["error"],
    }


def _charts(queue_name: str, *, hours: bool = True, municipality: int | None = None) -> dict:
    """The queue's chart of the last hour per minute (and of the last 7 days per hour); with
    `municipality`, of its jobs alone."""
    connection, moment = clients.redis(), timezone.now()
    minutes = series.minutes(connection, queue_name, moment, municipality=municipality)
    drawn = {"minutes": charts.chart(minutes, hourly=False)}
    if hours:
        drawn["hours"] = charts.chart(
            series.hours(connection, queue_name, moment, municipality=municipality), hourly=True
        )
    return drawn


@permission("view_dashboard")
@require_http_methods(["GET"])
def job_list(request, admin_site, queue_name, state):
    """A state's jobs; to staff limited to one municipality, that municipality's alone (counted among
    each state's newest), without the queue-wide actions, which are every municipality's."""
    queue_name = known_queue(queue_name)
    if state not in reads.STATES:
        raise Http404
    number = int(request.GET.get("page", "1")) if request.GET.get("page", "1").isdigit() else 1
    search = request.GET.get("q", "").strip()
    limited = _shown_municipality(request)
    result = reads.page(queue_name, state, number, search=search, func=request.GET.get("func", ""),
                        user_ids=_users_matching(search) if may_see_payloads(request) else (),
                        municipality=limited)  # fmt: skip
    rows = [_row(job, may_see_payloads(request)) for job in result.jobs]
    if state in ("scheduled", "retrying"):
        runs_at = reads.scheduled_at(clients.queue(queue_name), [row["job"].id for row in rows])
        for row in rows:
            row["runs_at"] = runs_at.get(row["job"].id)
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/job_list.html",
        context(
            request,
            admin_site,
            _("%(queue)s: %(state)s") % {"queue": queue_name, "state": state_label(state)},
            queue_name=queue_name,
            state=state,
            page=result,
            states=reads.STATES,
            limited=limited,
            **_municipality_choice(request, limited),
            window=reads.NAME_FILTER_WINDOW,
            counts=reads.counts(clients.queue(queue_name), limited),
            actions=[(key, action.label) for key, action in ACTIONS.items() if state in action.states],
            rows=rows,
            charts=_charts(queue_name, municipality=limited),
            legend=charts.legend(),
            search=search,
            cleanable=operations.CLEANABLE,
            clean_ages=[(key, label) for key, (_age, label) in CLEAN_AGES.items()],
            kept=_kept(queue_name),
            paused=pauses.paused(clients.redis()).get(queue_name),
            func=request.GET.get("func", ""),
            funcs=sorted({_func(job) for job in result.jobs}),
        ),  # fmt: skip
    )


@permission("view_dashboard")
@require_http_methods(["GET"])
def job_detail(request, admin_site, queue_name, job_id):
    queue_name = known_queue(queue_name)
    job = reads.fetch_job(clients.queue(queue_name), job_id)
    dead_letter = DeadLetter.objects.filter(job_id=job_id).order_by("-failed_at").first()
    if job is None and dead_letter is None:
        raise Http404
    limited = limited_to(request)
    if limited is not None and limited != (tenancy.municipality_of_job(job) if job else dead_letter.municipality):
        raise Http404  # another municipality's job: not even its existence is told
    status = job.get_status(refresh=False).value if job else "gone"
    runs_at = reads.scheduled_at(clients.queue(queue_name), [job_id]).get(job_id) if status == "scheduled" else None
    if runs_at and retries.is_retrying(clients.queue(queue_name), job_id):
        status = "retrying"
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/job_detail.html",
        context(
            request,
            admin_site,
            job_id,
            queue_name=queue_name,
            job=job,
            row=_row(job, may_see_payloads(request)) if job else None,
            status=status,
            runs_at=runs_at,
            dead_letter=dead_letter,
            actions_trail=actions_for_job(job_id)[:50],
            related=_related(job, dead_letter) if may_see_payloads(request) else None,  # the id is a payload
            actions=[(key, action.label) for key, action in ACTIONS.items() if status in action.states],
        ),  # fmt: skip
    )


def _kept(queue_name: str) -> str:
    """How long the queue keeps ended jobs: an older one is not there to clean."""
    policy, moment = policies.QUEUES[queue_name], timezone.now()
    failed = timesince(moment - timedelta(seconds=policy.failure_ttl), moment)
    if not policy.result_ttl:
        return _("Finished jobs are not kept; failed ones stay %(failed)s.") % {"failed": failed}
    finished = timesince(moment - timedelta(seconds=policy.result_ttl), moment)
    return _("Finished jobs stay %(finished)s, failed ones %(failed)s: older ones are gone already.") % {
        "finished": finished,
        "failed": failed,
    }


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
        "error": f"{exc_type}: {message}" if show_payload and message else exc_type,
        "traceback": error if show_payload else "",
        "result": result.return_value if result and not error else None,
        "attempts": [
            {"at": datetime.fromisoformat(attempt["at"]), "error": attempt["error"]}
            for attempt in job.meta.get("failures", [])
        ],
        "progress": job.meta.get("progress"),
        "log": [{"at": utcparse(entry["at"]), "line": entry["line"]} for entry in job.meta.get("log", [])]
        if show_payload
        else [],
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
