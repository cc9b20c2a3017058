from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from jobs.producers import enqueue_email_verify

from .models import EmailDelivery, User, VerificationToken


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "first_name", "email_verified_at", "is_staff", "date_joined")
    list_filter = ("is_staff", "is_active", ("email_verified_at", admin.EmptyFieldListFilter))
    fieldsets = BaseUserAdmin.fieldsets + (("Verificación", {"fields": ("email_verified_at",)}),)
    actions = ["resend_verification_email"]

    @admin.action(description="Reenviar email de verificación", permissions=["change"])
    def resend_verification_email(self, request, queryset):
        enqueued = pending = verified = 0
        for user in queryset.only("pk", "email_verified_at"):
            if user.is_verified:
                verified += 1
                continue
            result = enqueue_email_verify(user_id=user.pk)
            if result is None or result.created:
                enqueued += 1
            else:
                pending += 1
        self.message_user(
            request,
            f"Encolados: {enqueued}. Ya pendientes o enviados hace instantes: {pending}. Ya verificados: {verified}.",
            messages.SUCCESS,
        )


@admin.register(VerificationToken)
class VerificationTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "created_at", "expires_at", "used_at")
    list_select_related = ("user",)
    fields = ("user", "created_at", "expires_at", "used_at")  # the hash stays out of view
    readonly_fields = fields

    def has_add_permission(self, request):
        return False


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(admin.ModelAdmin):
    list_display = ("kind", "user", "sent_at", "delivery_key")
    list_filter = ("kind",)
    list_select_related = ("user",)
    readonly_fields = ("user", "kind", "delivery_key", "sent_at")

    def has_add_permission(self, request):
        return False
