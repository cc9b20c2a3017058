"""The dead-letter archive's retry, asked as the dashboard asks: a confirmation page listing the jobs,
a reason (required here: the archive is where a retry is a decision), one audit entry per queue;
and how that retry ended, read again each time the archive shows the row."""

from django.contrib import messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from jobs.models import DeadLetter
from jobs.observability.search import RetryOutcome, retry_outcome
from jobs.staff import operations
from jobs.staff.dashboard.access import context
from jobs.staff.dashboard.actions import ACTIONS
from jobs.staff.dashboard.labels import job_state_label

OUTCOMES = {
    "waiting": pgettext_lazy("retry outcome", "waiting"),
    "sent": pgettext_lazy("retry outcome", "sent"),
    "failed": pgettext_lazy("retry outcome", "failed again"),
    "gone": pgettext_lazy("retry outcome", "did not fail again (Redis no longer holds it)"),
}


def retry_confirmed(request, admin_site, rows: list[DeadLetter], *, carry=(), back: str):
    """The confirmation page (a TemplateResponse) until a POST confirms with a reason; then the
    retry, its messages, and None: the caller goes back to where staff were."""
    reason = request.POST.get("reason", "").strip()
    if request.POST.get("confirm") == "yes":
        if reason:
            retried, refused = operations.dead_letters_retry(
                rows=rows, user=request.user, reason=reason, detail=str(_("dead-letter archive")), name_rows=True
            )
            for why in refused:
                messages.error(request, why)
            for job_id in retried:
                messages.success(request, _("%(job)s: enqueued again") % {"job": job_id})
            if len(retried) + len(refused) < len(rows):
                messages.warning(request, _("The others were already pending."))
            return None
        messages.error(request, _("Say why you retry: the audit trail keeps it."))
    queues = sorted({row.queue for row in rows})
    label = ACTIONS["retry"].label
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/confirm.html",
        context(
            request,
            admin_site,
            _("Confirm: %(action)s") % {"action": label},
            queue_name=queues[0] if len(queues) == 1 else "",
            queue_label=", ".join(queues),
            action_name="retry",
            action_label=label,
            job_ids=[row.job_id for row in rows][:200],
            affected=len(rows),
            carry=carry,
            reason_required=True,
            next=back,
        ),  # fmt: skip
    )


def outcome_html(row: DeadLetter, outcome: RetryOutcome | None = None) -> str:
    """How the row's retry ended, linked to the job's page (and to its new failure, if it failed again)."""
    outcome = outcome or retry_outcome(row)
    if outcome is None or outcome.kind == "unknown":
        return ""
    label = OUTCOMES.get(outcome.kind) or job_state_label(outcome.job_state)
    job_url = reverse("admin:jobs_dashboard_job", args=[row.queue, row.job_id])
    shown = format_html('<a href="{}" class="dash-outcome-{}">{}</a>', job_url, outcome.kind, label)
    if outcome.dead_letter is not None:
        again = reverse("admin:jobs_deadletter_change", args=[outcome.dead_letter.pk])
        shown = format_html('{} (<a href="{}">{}</a>)', shown, again, outcome.dead_letter.exc_type)
    return shown
