from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, Permission
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ceres_site.municipalities.scoping import ScopedToMunicipality
from jobs.enqueue.producers import enqueue_email_verify
from jobs.staff.dashboard.search import jobs_of_user

from .models import EmailDelivery, Upload, User, VerificationToken

# Django writes a permission's name into the database in English, once; staff read it translated.
DEFAULT_PERMISSIONS = {
    "add": _("Add %(model)s"), "change": _("Change %(model)s"), "delete": _("Delete %(model)s"),
    "view": _("View %(model)s"),
}  # fmt: skip


def permission_label(permission: Permission) -> str:
    """As in "Cuentas | usuario | Agregar usuario": Django's own permissions by their action and model,
    ours (Meta.permissions, English msgids) through the catalog."""
    action, _sep, model_name = permission.codename.partition("_")
    model = permission.content_type.model_class()
    default = model is not None and action in DEFAULT_PERMISSIONS and model_name == model._meta.model_name
    if model is not None and default and permission.codename not in dict(model._meta.permissions):
        name = DEFAULT_PERMISSIONS[action] % {"model": model._meta.verbose_name}
    else:
        name = gettext(permission.name)
    return f"{permission.content_type} | {name}"


class TranslatedPermissions:
    """The permission pickers of the user and group pages list permissions by `permission_label`."""

    def formfield_for_manytomany(self, db_field, request=None, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and db_field.remote_field.model is Permission:
            field.label_from_instance = permission_label
        return field


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(TranslatedPermissions, BaseGroupAdmin):
    pass


@admin.register(User)
class UserAdmin(ScopedToMunicipality, TranslatedPermissions, BaseUserAdmin):
    list_display = ("username", "email", "first_name", "municipality", "email_verified_at", "is_staff", "date_joined")
    list_filter = ("municipality", "is_staff", "is_active", ("email_verified_at", admin.EmptyFieldListFilter))
    fieldsets = BaseUserAdmin.fieldsets + (
        (_("Verification"), {"fields": ("municipality", "email_verified_at", "jobs")}),
    )
    readonly_fields = ("jobs",)
    actions = ["resend_verification_email"]

    @admin.display(description=_("jobs"))
    def jobs(self, user):
        """Every job of any queue and state Redis still holds that concerned this user, and every final
        failure the archive keeps; the email jobs every user has, also when Redis no longer does."""
        if not user.pk:
            return "—"
        found = jobs_of_user(user.pk)
        listed = {hit.job_id for hit in found.hits}
        missing = [job_id for job_id in (f"email-verify-{user.pk}", f"email-welcome-{user.pk}") if job_id not in listed]
        lines = format_html_join(
            mark_safe("<br>"), '<a href="{}">{}</a>: {}',
            ((reverse("admin:jobs_dashboard_job", args=["email", job_id]), job_id, _("not in Redis")) for job_id in missing),
        )  # fmt: skip
        return render_to_string(
            "admin/accounts/user/jobs.html", {"found": found, "missing": lines, "limit": found.limit}
        )

    @admin.action(description=_("Resend the verification email"), permissions=["change"])
    def resend_verification_email(self, request, queryset):
        enqueued = pending = verified = 0
        for user in queryset.only("pk", "email_verified_at", "municipality"):
            if user.is_verified:
                verified += 1
                continue
            result = enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
            if result is None or result.created:
                enqueued += 1
            else:
                pending += 1
        self.message_user(
            request,
            _("Enqueued: %(enqueued)d. Already pending or just sent: %(pending)d. Already verified: %(verified)d.")
            % {"enqueued": enqueued, "pending": pending, "verified": verified},
            messages.SUCCESS,
        )


@admin.register(VerificationToken)
class VerificationTokenAdmin(ScopedToMunicipality, admin.ModelAdmin):
    municipality_path = "user__municipality"

    list_display = ("user", "created_at", "expires_at", "used_at")
    list_select_related = ("user",)
    fields = ("user", "created_at", "expires_at", "used_at")  # the hash stays out of view
    readonly_fields = fields

    def has_add_permission(self, request):
        return False


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(ScopedToMunicipality, admin.ModelAdmin):
    municipality_path = "user__municipality"

    list_display = ("kind", "user", "sent_at", "delivery_key")
    list_filter = ("kind",)
    list_select_related = ("user",)
    readonly_fields = ("user", "kind", "delivery_key", "sent_at")

    def has_add_permission(self, request):
        return False


@admin.register(Upload)
class UploadAdmin(ScopedToMunicipality, admin.ModelAdmin):
    """What people uploaded and what the files queue made of it (the files themselves stay private)."""

    municipality_path = "user__municipality"

    list_display = ("user", "kind", "state", "reason", "warning", "size", "uploaded_at", "processed_at")
    list_filter = ("kind", "state")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    fields = ("user", "kind", "state", "reason", "warning", "size", "uploaded_at", "processed_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False
