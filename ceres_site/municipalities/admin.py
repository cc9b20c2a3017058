import os

from django.contrib import admin
from django.db import models
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .models import Municipality


@admin.register(Municipality)
class MunicipalityAdmin(admin.ModelAdmin):
    """Superusers only, whatever permissions a staff member holds: a municipality's addresses and
    mail server decide whose name every email goes out under. The default municipality cannot be deleted."""

    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "slug", "active", "is_default", "hosts", "sender_shown")
    list_filter = ("active",)
    search_fields = ("name", "slug", "hosts")
    readonly_fields = ("is_default", "secrets_shown", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "slug", "active", "is_default", "base_url", "hosts")}),
        (gettext_lazy("Emails"), {"fields": ("sender_name", "sender_email", "logo_url", "colour")}),
        (gettext_lazy("Own mail server and alerts"), {
            "fields": ("smtp_host", "smtp_port", "smtp_username", "smtp_password_env", "smtp_use_tls",
                       "smtp_rate_per_minute", "smtp_rate_per_hour", "slack_webhook_env", "secrets_shown"),
        }),
        (None, {"fields": ("created_at",)}),
    )  # fmt: skip

    @admin.display(description=gettext_lazy("sender"))
    def sender_shown(self, municipality: Municipality) -> str:
        return municipality.sender

    @admin.display(description=gettext_lazy("variables"))
    def secrets_shown(self, municipality: Municipality) -> str:
        """Whether each named variable is set in this process: never its value."""
        named = [name for name in (municipality.smtp_password_env, municipality.slack_webhook_env) if name]
        if not named:
            return "—"
        return "; ".join(
            (_("%(name)s: set") if os.environ.get(name) else _("%(name)s: not set in this process")) % {"name": name}
            for name in named
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, from its page: the default has no delete button
        return actions

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_module_permission(request) and not (obj is not None and obj.is_default)
