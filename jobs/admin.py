from django.apps import apps
from django.contrib import admin, messages
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from jobs.dead_letters import CannotRetry, dead_letter_resolve, dead_letter_retry
from jobs.models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("job_id", "queue", "func_name", "exc_type", "failed_at", "alert", "retried_at", "resolved_at")
    list_filter = ("queue", "exc_type", "alert", ("resolved_at", admin.EmptyFieldListFilter), "failed_at")
    search_fields = ("=job_id", "exc_message", "related_id")
    date_hierarchy = "failed_at"
    actions = ["retry", "resolve"]
    fields = (
        "job_id", "queue", "func_name", "args", "kwargs", "related", "exc_type", "exc_message", "attempts",
        "failed_at", "job_created_at", "alert", "alert_note", "alerted_at", "retried_at", "retried_by",
        "resolved_at", "resolved_by", "traceback",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_retry_permission(self, request):
        return request.user.has_perm("jobs.retry_deadletter")

    @admin.display(description="objeto relacionado")
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

    @admin.action(description="Reintentar los jobs seleccionados", permissions=["retry"])
    def retry(self, request, queryset):
        for dead_letter in queryset:
            try:
                result = dead_letter_retry(dead_letter=dead_letter, user=request.user)
            except CannotRetry as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            state = "encolado de nuevo" if result.created else f"ya pendiente ({result.status})"
            self.message_user(request, f"{dead_letter.job_id}: {state}", messages.SUCCESS)

    @admin.action(description="Marcar como resueltos", permissions=["retry"])
    def resolve(self, request, queryset):
        for dead_letter in queryset:
            dead_letter_resolve(dead_letter=dead_letter, user=request.user)
        self.message_user(request, f"{queryset.count()} marcados como resueltos.", messages.SUCCESS)
