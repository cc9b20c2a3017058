from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from jobs.enqueue.producers import enqueue_newsletter_test

from . import campaigns
from .models import Newsletter

SENDING = ngettext_lazy("%(subject)s: sending to %(n)d person.", "%(subject)s: sending to %(n)d people.", "n")
LEFT = ngettext_lazy("%(subject)s: %(n)d copy left to send.", "%(subject)s: %(n)d copies left to send.", "n")


@admin.register(Newsletter)
class NewsletterAdmin(admin.ModelAdmin):
    """Compose a draft; test-send it to yourself; send, pause and resume it (`send_newsletter`)."""

    list_display = ("subject", "state_shown", "recipients", "progress_line", "sent_at")
    list_filter = ("state",)
    readonly_fields = ("state_shown", "recipients", "progress_line", "sent_at", "sent_by")
    fields = ("subject", "body_text", "body_html", *readonly_fields)
    actions = ["test_send", "send", "pause", "resume"]
    change_form_template = "admin/newsletters/newsletter/change_form.html"

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or obj.state == Newsletter.State.DRAFT)

    def has_send_permission(self, request):
        return request.user.has_perm("newsletters.send_newsletter")

    @admin.display(description=_("state"))
    def state_shown(self, obj):
        return campaigns.state_label(obj, campaigns.progress(obj))

    @admin.display(description=_("progress"))
    def progress_line(self, obj):
        found = campaigns.progress(obj)
        return format_html(
            '<span class="newsletter-progress">{}</span>',
            _("sent %(sent)d · pending %(pending)d · failed %(failed)d · unsubscribed %(unsubscribed)d")
            % {
                "sent": found.sent,
                "pending": found.pending,
                "failed": found.failed,
                "unsubscribed": found.unsubscribed,
            },
        )

    @admin.action(description=_("Send me a test copy"))
    def test_send(self, request, queryset):
        if not request.user.email:
            self.message_user(request, _("Your user has no email address."), messages.ERROR)
            return
        for newsletter in queryset:
            enqueue_newsletter_test(newsletter_id=newsletter.pk, user_id=request.user.pk)
        self.message_user(request, _("A test copy is on its way to %(email)s.") % {"email": request.user.email})

    @admin.action(description=_("Send to every subscriber"), permissions=["send"])
    def send(self, request, queryset):
        self._each(request, queryset, campaigns.send, SENDING)

    @admin.action(description=_("Pause sending"), permissions=["send"])
    def pause(self, request, queryset):
        paused = sum(campaigns.pause(newsletter, request.user) for newsletter in queryset)
        self.message_user(
            request, ngettext("%(n)d newsletter paused.", "%(n)d newsletters paused.", paused) % {"n": paused}
        )

    @admin.action(description=_("Resume sending"), permissions=["send"])
    def resume(self, request, queryset):
        self._each(request, queryset, campaigns.resume, LEFT)

    def _each(self, request, queryset, act, said) -> None:
        """`act` on each newsletter, and a message per newsletter with the count it returned."""
        for newsletter in queryset:
            count = act(newsletter, request.user)
            self.message_user(request, said % {"subject": newsletter.subject, "n": count})
