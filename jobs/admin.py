from datetime import datetime

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from jobs.config import tenancy
from jobs.failures.dead_letters import UNREADABLE_PAYLOAD, dead_letter_resolve
from jobs.models import Dashboard, DeadLetter, JobAction, JobActionTarget
from jobs.staff.audit import action_record, actions_seen_by
from jobs.staff.dashboard import actions, archive, search, views
from jobs.templatetags.dashboard import when


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the system only: staff look, and act through the explicit actions."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("job_id", "queue", "exc_type", "failed", "alert", "state")
    list_filter = (
        "queue",
        "exc_type",
        "alert",
        "related_model",
        ("resolved_at", admin.EmptyFieldListFilter),
        "failed_at",
    )
    search_fields = ("=job_id", "exc_message", "related_id")
    date_hierarchy = "failed_at"
    actions = ["retry", "resolve"]
    fields = (
        "job_id", "queue", "task", "args", "kwargs", "related", "exc_type", "exc_message", "attempts_table",
        "failed_at", "job_created_at", "alert", "alert_note", "alerted_at", "retried_at", "retried_by",
        "retry_result", "resolved_at", "resolved_by", "traceback_text",
    )  # fmt: skip
    readonly_fields = fields
    change_form_template = "admin/jobs/deadletter/change_form.html"

    PAYLOAD_FIELDS = ("args", "kwargs", "related", "exc_message", "attempts_table", "traceback_text")

    @admin.display(description=_("task"))
    def task(self, obj):
        """The stored sentinel stays as code compares it; staff read it in their language."""
        return _("<payload that cannot be read>") if obj.func_name == UNREADABLE_PAYLOAD else obj.func_name

    @admin.display(description=_("failed at"), ordering="failed_at")
    def failed(self, obj):
        return when(obj.failed_at)

    @admin.display(description=_("state"))
    def state(self, obj):
        if obj.resolved_at:
            return format_html("{} {}", _("resolved"), when(obj.resolved_at))
        if obj.retried_at:
            outcome = archive.outcome_html(obj)
            retried = format_html("{} {}", _("retried"), when(obj.retried_at))
            return format_html("{} · {}", retried, outcome) if outcome else retried
        return _("open")

    @admin.display(description=_("how the retry ended"))
    def retry_result(self, obj):
        return archive.outcome_html(obj) or "—"

    @admin.display(description=_("attempts"))
    def attempts_table(self, obj):
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>",
            ((when(datetime.fromisoformat(attempt["at"])), attempt["error"]) for attempt in obj.attempts),
        )  # fmt: skip
        return format_html(
            '<table class="dash-attempts"><tr><th>{}</th><th>{}</th></tr>{}</table>', _("when"), _("error"), rows
        )

    @admin.display(description=_("traceback"))
    def traceback_text(self, obj):
        return format_html('<pre class="dash-tb">{}</pre>', obj.traceback)  # indentation kept

    def get_urls(self):
        retry = path("<int:pk>/retry/", self.admin_site.admin_view(self.retry_one), name="jobs_deadletter_retry")
        return [retry, *super().get_urls()]

    def retry_one(self, request, pk):
        """The detail page's Reintentar button: a POST, with `jobs.retry_deadletter`, that asks first
        (a GET of the address, a reload, goes back to the row)."""
        change = reverse("admin:jobs_deadletter_change", args=[pk])
        if request.method != "POST":
            return HttpResponseRedirect(change)
        if not self.has_retry_permission(request):
            raise PermissionDenied
        rows = list(self.get_queryset(request).filter(pk=pk))
        if not rows:
            return HttpResponseRedirect(reverse("admin:jobs_deadletter_changelist"))
        return archive.retry_confirmed(request, self.admin_site, rows, back=change) or HttpResponseRedirect(change)

    def get_queryset(self, request):
        """Staff limited to one municipality see its jobs' dead letters alone (`jobs.config.tenancy`)."""
        rows = super().get_queryset(request)
        limited = tenancy.scope_of(request.user)
        return rows if limited is None else rows.filter(municipality=limited)

    def get_list_display(self, request):
        """With `jobs.view_payloads`, the error's message beside its type (the mail server's answer, say)."""
        if request.user.has_perm("jobs.view_payloads"):
            return tuple("error" if name == "exc_type" else name for name in self.list_display)
        return self.list_display

    @admin.display(description=_("error"), ordering="exc_type")
    def error(self, obj):
        message = obj.exc_message.splitlines()[0] if obj.exc_message else ""
        return format_html("{} — {}", obj.exc_type, Truncator(message).chars(120)) if message else obj.exc_type

    def render_change_form(self, request, context, *args, **kwargs):
        context["can_retry"] = self.has_retry_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)

    def has_retry_permission(self, request):
        return request.user.has_perm("jobs.retry_deadletter")

    def get_fields(self, request, obj=None):
        """Arguments and error details, as in the dashboard, only with `jobs.view_payloads`."""
        if request.user.has_perm("jobs.view_payloads"):
            return self.fields
        return tuple(field for field in self.fields if field not in self.PAYLOAD_FIELDS)

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_search_fields(self, request):
        return self.search_fields if request.user.has_perm("jobs.view_payloads") else ("=job_id",)

    @admin.display(description=_("related object"))
    def related(self, obj):
        if not obj.related_model:
            return "—"
        label = f"{obj.related_model} #{obj.related_id}"
        model = apps.get_model(obj.related_model)
        try:
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.related_id])
        except NoReverseMatch:
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.action(description=_("Retry the selected jobs"), permissions=["retry"])
    def retry(self, request, queryset):
        """Asks first, as the dashboard does; the confirmation posts the selection back here."""
        rows = list(queryset)
        carry = [("action", "retry"), *((helpers.ACTION_CHECKBOX_NAME, row.pk) for row in rows)]
        return archive.retry_confirmed(request, self.admin_site, rows, carry=carry, back=request.get_full_path())

    @admin.action(description=_("Mark as resolved"), permissions=["retry"])
    def resolve(self, request, queryset):
        rows = list(queryset)
        for dead_letter in rows:
            dead_letter_resolve(dead_letter=dead_letter, user=request.user)
        for queue_name in {row.queue for row in rows}:
            job_ids = [row.job_id for row in rows if row.queue == queue_name]
            action_record(kind=JobAction.Kind.RESOLVE, queue_name=queue_name, job_ids=job_ids, user=request.user,
                          municipalities={row.job_id: row.municipality for row in rows})  # fmt: skip
        self.message_user(request, _("%(count)d marked as resolved.") % {"count": len(rows)}, messages.SUCCESS)


@admin.register(Dashboard)
class DashboardAdmin(ReadOnlyAdmin):
    """The queue dashboard: its pages live under /admin/jobs/dashboard/, behind admin login."""

    def has_module_permission(self, request):
        return request.user.has_perm("jobs.view_dashboard")

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("jobs.view_dashboard")

    def get_urls(self):
        def view(function, name, route):
            def wrapper(request, *args, **kwargs):
                return function(request, self.admin_site, *args, **kwargs)

            return path(route, self.admin_site.admin_view(wrapper), name=f"jobs_dashboard_{name}")

        return [
            view(views.overview, "overview", ""),
            # The name admin's index, app page and sidebar link a model by: without it, plain text.
            view(views.overview, "changelist", ""),
            view(views.health_page, "health", "health/"),
            view(actions.triage, "triage", "<str:queue_name>/triage/"),
            view(views.job_detail, "job", "<str:queue_name>/job/<str:job_id>/"),
            view(actions.action, "action", "<str:queue_name>/action/<str:name>/"),
            view(actions.queue_action, "queue_action", "<str:queue_name>/queue/<str:name>/"),
            view(search.search, "search", "search/"),
            view(views.job_list, "list", "<str:queue_name>/<str:state>/"),
        ]


@admin.register(JobAction)
class JobActionAdmin(ReadOnlyAdmin):
    list_display = ("moment", "user", "kind", "queue", "jobs", "reason", "detail")
    list_filter = ("kind", "queue")

    search_fields = ("=targets__job_id", "user__username", "reason")
    date_hierarchy = "at"
    ON_NO_JOB = {JobAction.Kind.PAUSE, JobAction.Kind.RESUME, JobAction.Kind.SEND}  # a queue or a campaign

    def get_queryset(self, request):
        """Staff limited to one municipality read their team's actions and those on its jobs (another's
        row is "not found")."""
        scope = tenancy.scope_of(request.user)
        targets = JobActionTarget.objects.filter(action=OuterRef("pk"))
        if scope is not None:  # the job a row names is one of theirs
            targets = targets.filter(municipality=scope)
        first = targets.order_by("pk").values("job_id")[:1]
        return actions_seen_by(super().get_queryset(request), scope).annotate(first_job=Subquery(first))

    @admin.display(description=_("when"), ordering="at")
    def moment(self, obj):
        return when(obj.at)

    @admin.display(description=_("jobs"), ordering="count")
    def jobs(self, obj):
        """The job it acted on, linked, and how many others: a row that names what it changed."""
        if obj.kind in self.ON_NO_JOB:
            return "—"
        if not obj.first_job:
            return obj.count
        link = format_html(
            '<a href="{}">{}</a>', reverse("admin:jobs_dashboard_job", args=[obj.queue, obj.first_job]), obj.first_job
        )
        if obj.count <= 1:
            return link
        more = ngettext("and %(n)d more", "and %(n)d more", obj.count - 1) % {"n": obj.count - 1}
        return format_html("{} {}", link, more)
