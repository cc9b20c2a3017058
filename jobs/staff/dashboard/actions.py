"""The dashboard's changes, each a POST that first shows what will change: bulk retry of dead
letters by error (`triage`), pause, resume and clean a queue, and actions on selected jobs.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Min
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy
from django.views.decorators.http import require_http_methods
from rq.job import JobStatus

from jobs.config import tenancy
from jobs.enqueue import clients
from jobs.models import JobAction
from jobs.observability import reads
from jobs.staff import operations
from jobs.staff.audit import action_record
from jobs.staff.dashboard.access import context, known_queue, limited_to, permission, post_or_back, whole_platform
from jobs.staff.dashboard.labels import state_label

log = logging.getLogger(__name__)


@permission("view_dashboard")
@require_http_methods(["GET", "POST"])
def triage(request, admin_site, queue_name):
    """Open dead letters of a queue grouped by error, and a filtered bulk retry with a count first;
    to staff limited to one municipality, its dead letters alone."""
    queue_name = known_queue(queue_name)
    exc_type = request.POST.get("exc_type") or request.GET.get("exc_type", "")
    since = _parse_since(request.POST.get("since") or request.GET.get("since", ""))
    limited = limited_to(request)
    rows = operations.dead_letters_matching(queue_name=queue_name, exc_type=exc_type, since=since, municipality=limited)
    groups = (
        operations.dead_letters_matching(queue_name=queue_name, municipality=limited)
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
        context(
            request,
            admin_site,
            _("%(queue)s: failures by error") % {"queue": queue_name},
            queue_name=queue_name,
            groups=groups,
            exc_type=exc_type,
            since=request.POST.get("since") or request.GET.get("since", ""),
            matching=rows.count(),
            confirming=request.method == "POST",
        ),  # fmt: skip
    )


# Shorter than what the queues keep (finished jobs 1 h, failed ones 24 h): a longer age finds nothing.
CLEAN_AGES = {
    "10m": (timedelta(minutes=10), _("10 minutes")),
    "30m": (timedelta(minutes=30), _("30 minutes")),
    "1h": (timedelta(hours=1), _("1 hour")),
    "6h": (timedelta(hours=6), _("6 hours")),
    "12h": (timedelta(hours=12), _("12 hours")),
}


@permission("view_dashboard")
@whole_platform
@post_or_back
def queue_action(request, admin_site, queue_name, name):
    """Pause, resume or clean a queue: a POST shows what will happen (for clean, how many jobs);
    a POST with `confirm=yes` does it. Pause and resume need `operate_jobs`, clean `destroy_jobs`."""
    queue_name = known_queue(queue_name)
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
    before = timezone.now() - CLEAN_AGES[age][0] if name == "clean" else None
    reason, by = request.POST.get("reason", ""), request.user.get_username()
    if request.POST.get("confirm") == "yes":
        if name == "pause":
            operations.queue_pause(queue_name=queue_name, user=request.user, by=by, reason=reason)
            messages.success(
                request, _("%(queue)s is paused: its jobs wait until you resume it.") % {"queue": queue_name}
            )
        elif name == "resume":
            operations.queue_resume(queue_name=queue_name, user=request.user, by=by, reason=reason)
            messages.success(request, _("%(queue)s is running again.") % {"queue": queue_name})
        else:
            done = operations.queue_clean(
                queue_name=queue_name, states=states, before=before, user=request.user, reason=reason
            )
            messages.success(request, ngettext("%(n)d old job deleted.", "%(n)d old jobs deleted.", done) % {"n": done})
        return HttpResponseRedirect(back)
    count = (
        len(operations.jobs_ended_before(queue_name=queue_name, states=states, before=before)) if name == "clean" else 0
    )
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/queue_confirm.html",
        context(
            request,
            admin_site,
            {"pause": _("Pause the queue"), "resume": _("Resume the queue"), "clean": _("Clean old jobs")}[name],
            queue_name=queue_name,
            action_name=name,
            count=count,
            states=states,
            state_labels=[state_label(s) for s in states],
            age=age,
            before=before,
            back=back,
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
    "promote": Action(_("Run now"), "operate_jobs", frozenset({"scheduled", "retrying"}), operations.jobs_promote),
    "cancel": Action(
        _("Cancel"),
        "operate_jobs",
        frozenset({"rate_limited", "queued", "scheduled", "retrying", "deferred"}),
        operations.jobs_cancel,
    ),
    "delete": Action(
        _("Delete"), "destroy_jobs", frozenset({s.value for s in JobStatus} | {"retrying"}), operations.jobs_delete
    ),
    "empty": Action(_("Empty the queue"), "destroy_jobs", frozenset(), None),  # the whole queue, never a selection
}
# What each action did, as a sentence: (all of them, plural on `n`; some of them, plural on `done`).
DONE = {
    "retry": (ngettext_lazy("%(n)d job enqueued again.", "%(n)d jobs enqueued again.", "n"),
              ngettext_lazy("%(done)d of %(n)d jobs enqueued again.", "%(done)d of %(n)d jobs enqueued again.", "done")),
    "promote": (ngettext_lazy("%(n)d job sent to run now.", "%(n)d jobs sent to run now.", "n"),
                ngettext_lazy("%(done)d of %(n)d jobs sent to run now.", "%(done)d of %(n)d jobs sent to run now.",
                              "done")),
    "cancel": (ngettext_lazy("%(n)d job canceled.", "%(n)d jobs canceled.", "n"),
               ngettext_lazy("%(done)d of %(n)d jobs canceled.", "%(done)d of %(n)d jobs canceled.", "done")),
    "delete": (ngettext_lazy("%(n)d job deleted.", "%(n)d jobs deleted.", "n"),
               ngettext_lazy("%(done)d of %(n)d jobs deleted.", "%(done)d of %(n)d jobs deleted.", "done")),
    "empty": (ngettext_lazy("Queue emptied: %(n)d job deleted.", "Queue emptied: %(n)d jobs deleted.", "n"),
              ngettext_lazy("Queue emptied: %(done)d job deleted.", "Queue emptied: %(done)d jobs deleted.", "done")),
}  # fmt: skip


@permission("view_dashboard")
@post_or_back
def action(request, admin_site, queue_name, name):
    """POST the selection: a confirmation page lists what will change; POST `confirm=yes` does it."""
    queue_name = known_queue(queue_name)
    chosen = ACTIONS.get(name)
    if chosen is None:
        raise Http404
    if not request.user.has_perm(f"jobs.{chosen.permission}"):
        raise PermissionDenied
    queue = clients.queue(queue_name)
    scope, state = request.POST.get("scope", "selected"), request.POST.get("state", "")
    if name == "empty":
        job_ids = []
        affected = reads.count(queue, "queued") + reads.count(queue, "rate_limited")
    elif scope == "all" and state in reads.STATES:
        job_ids = reads.job_ids(queue, state, 0, reads.count(queue, state))
        affected = len(job_ids)
    else:
        job_ids = request.POST.getlist("job_ids")
        affected = len(job_ids)
    _refuse_other_municipalities(request, queue, name, scope, job_ids)
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
            context(
                request,
                admin_site,
                _("Confirm: %(action)s") % {"action": chosen.label},
                queue_name=queue_name,
                action_name=name,
                action_label=chosen.label,
                job_ids=job_ids[:200],
                affected=affected,
                scope=scope,
                state=state,
                next=back,
            ),  # fmt: skip
        )
    reason = request.POST.get("reason", "")
    if name == "empty":
        done = operations.queue_empty(queue_name=queue_name, user=request.user, reason=reason)
    else:
        done = len(chosen.run(queue_name=queue_name, job_ids=job_ids, user=request.user, reason=reason))
    if not done:
        messages.warning(request, _("No job changed: they were no longer where this action applies."))
    else:
        every, some = DONE[name]
        messages.success(request, (every if done == affected else some) % {"done": done, "n": affected})
    return HttpResponseRedirect(back)


def _refuse_other_municipalities(request, queue, name: str, scope: str, job_ids: list[str]) -> None:
    """Staff limited to one municipality act on its jobs alone, named one by one: a whole queue, a
    whole state, or any job of another municipality (a crafted POST) is refused, and the refusal
    audited with the jobs it named."""
    limited = limited_to(request)
    if limited is None:
        return
    if name == "empty" or scope == "all":
        raise PermissionDenied
    jobs = {job_id: reads.fetch_job(queue, job_id) for job_id in job_ids}
    foreign = [job_id for job_id, job in jobs.items() if job is None or tenancy.municipality_of_job(job) != limited]
    if foreign:
        action_record(
            kind=JobAction.Kind.REFUSED,
            queue_name=queue.name,
            job_ids=foreign,
            user=request.user,
            detail=f"{name}: not jobs of municipality {limited}",
        )  # their own team's audit alone
        log.warning("user %s refused %s on %d job(s) of another municipality", request.user.pk, name, len(foreign))
        raise PermissionDenied


def _parse_since(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
