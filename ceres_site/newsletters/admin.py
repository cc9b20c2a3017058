import math

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, ngettext_lazy

from ceres_site.municipalities.scoping import ScopedToMunicipality
from jobs.enqueue.producers import enqueue_newsletter_test

from . import campaigns, forms, rendering, texts
from .models import Newsletter
from .unsubscribe import unsubscribe_token

SENDING = ngettext_lazy("%(subject)s: sending to %(n)d person.", "%(subject)s: sending to %(n)d people.", "n")
LEFT = ngettext_lazy("%(subject)s: %(n)d copy left to send.", "%(subject)s: %(n)d copies left to send.", "n")


@admin.register(Newsletter)
class NewsletterAdmin(ScopedToMunicipality, admin.ModelAdmin):
    """Compose a draft, preview it, test-send it to yourself; send (after a confirmation page), pause and
    resume it from its own page or from the list (`send_newsletter`)."""

    form = forms.NewsletterForm
    list_display = ("subject", "municipality", "state_shown", "recipients", "progress_line", "sent_at")
    list_filter = ("state", "municipality")
    readonly_fields = ("state_shown", "recipients", "progress_line", "sent_at", "sent_by")
    fields = ("municipality", "subject", "body_text", "body_html", *readonly_fields)
    actions = ["test_send", "send", "pause", "resume"]
    change_form_template = "admin/newsletters/newsletter/change_form.html"

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or obj.state == Newsletter.State.DRAFT)

    def has_send_permission(self, request):
        return request.user.has_perm("newsletters.send_newsletter")

    def get_urls(self):
        def page(name, view):
            return path(
                f"<path:object_id>/{name}/", self.admin_site.admin_view(view), name=f"newsletters_newsletter_{name}"
            )

        return [
            page("send", self.send_view),
            page("pause", self.pause_view),
            page("resume", self.resume_view),
            page("test", self.test_view),
            page("preview", self.preview_view),
            *super().get_urls(),
        ]

    @admin.display(description=gettext_lazy("state"))
    def state_shown(self, obj):
        return campaigns.state_label(obj, campaigns.progress(obj))

    @admin.display(description=gettext_lazy("progress"))
    def progress_line(self, obj):
        return format_html('<span class="newsletter-progress">{}</span>', texts.progress_text(campaigns.progress(obj)))

    # The newsletter's own page: its progress bar and the buttons of what may be done with it now.

    def change_view(self, request, object_id, form_url="", extra_context=None):
        newsletter = self.get_object(request, object_id)
        if newsletter is not None:
            extra_context = {**(extra_context or {}), "panel": self._panel(request, newsletter)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _panel(self, request, newsletter: Newsletter) -> dict:
        found = campaigns.progress(newsletter)
        done = found.recipients - found.pending
        can_send = self.has_send_permission(request)
        return {
            "started": newsletter.state != Newsletter.State.DRAFT,
            "live": newsletter.state == Newsletter.State.SENDING and found.pending > 0,
            "state": campaigns.state_label(newsletter, found),
            "percent": math.floor(100 * done / found.recipients) if found.recipients else 0,
            "done": done,
            "progress": found,
            "text": texts.progress_text(found),
            "can_send": can_send and newsletter.state == Newsletter.State.DRAFT,
            "can_pause": can_send and newsletter.state == Newsletter.State.SENDING and found.pending > 0,
            "can_resume": can_send and newsletter.state == Newsletter.State.PAUSED,
        }

    def response_change(self, request, obj):
        if "_preview" in request.POST:
            self.message_user(request, _("Saved. This is how it reads."))
            return redirect(_url("preview", obj))
        return super().response_change(request, obj)

    def response_add(self, request, obj, post_url_continue=None):
        if "_preview" in request.POST:
            self.message_user(request, _("Saved. This is how it reads."))
            return redirect(_url("preview", obj))
        return super().response_add(request, obj, post_url_continue)

    # Pages and buttons. A GET never changes anything: sending is confirmed on its own page, and the
    # buttons POST (the admin's CSRF check); the send permission is the one the list's actions require.

    def send_view(self, request, object_id):
        newsletter = self._newsletter(request, object_id, send=True)
        broken = forms.broken(newsletter)
        if request.method == "POST":
            if broken:  # every job would fail: said here, once, rather than by each job
                self.message_user(request, _("%(subject)s was not sent. %(error)s")
                                  % {"subject": newsletter.subject, "error": broken}, messages.ERROR)  # fmt: skip
                return redirect(_url("change", newsletter))
            count = campaigns.send(newsletter, request.user)
            if count:
                self.message_user(request, SENDING % {"subject": newsletter.subject, "n": count})
            else:
                self._not_sent(request, newsletter)
            return redirect(_url("change", newsletter))
        recipients = campaigns.audience(newsletter.municipality_id).count()
        pace = campaigns.pace(newsletter.municipality)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": newsletter,
            "title": _("Send “%(subject)s” to every subscriber?") % {"subject": newsletter.subject},
            "subtitle": None,
            "draft": newsletter.state == Newsletter.State.DRAFT,
            "broken": broken,
            "state": newsletter.get_state_display(),
            "recipients": recipients,
            "rate": texts.rate_text(pace),
            "estimate": texts.estimate_text(pace, recipients),
            "confirm": ngettext("Yes, send it to %(n)d person", "Yes, send it to %(n)d people", recipients)
            % {"n": recipients},
        }
        return TemplateResponse(request, "admin/newsletters/newsletter/send_confirm.html", context)

    def _not_sent(self, request, newsletter: Newsletter) -> None:
        newsletter.refresh_from_db()
        if newsletter.state == Newsletter.State.DRAFT:
            self.message_user(request, _("%(subject)s: nobody is subscribed, there is no one to send it to.")
                              % {"subject": newsletter.subject}, messages.WARNING)  # fmt: skip
        else:
            self.message_user(request, _("%(subject)s is not a draft any more (it is %(state)s): it is sent only once.")
                              % {"subject": newsletter.subject, "state": newsletter.get_state_display()},
                              messages.WARNING)  # fmt: skip

    def pause_view(self, request, object_id):
        newsletter = self._newsletter(request, object_id, send=True)
        if request.method == "POST":
            if campaigns.pause(newsletter, request.user):
                self.message_user(request, _("%(subject)s: paused.") % {"subject": newsletter.subject})
            else:
                self.message_user(request, _("%(subject)s was not being sent: nothing to pause.")
                                  % {"subject": newsletter.subject}, messages.WARNING)  # fmt: skip
        return redirect(_url("change", newsletter))

    def resume_view(self, request, object_id):
        newsletter = self._newsletter(request, object_id, send=True)
        if request.method == "POST":
            if Newsletter.objects.filter(pk=newsletter.pk, state=Newsletter.State.PAUSED).exists():
                self.message_user(request, LEFT % {"subject": newsletter.subject,
                                                   "n": campaigns.resume(newsletter, request.user)})  # fmt: skip
            else:
                self.message_user(request, _("%(subject)s was not paused: nothing to resume.")
                                  % {"subject": newsletter.subject}, messages.WARNING)  # fmt: skip
        return redirect(_url("change", newsletter))

    def test_view(self, request, object_id):
        newsletter = self._newsletter(request, object_id)
        if request.method == "POST":
            self._test_copies(request, [newsletter])
        return redirect(_url("change", newsletter))

    def preview_view(self, request, object_id):
        newsletter = self._newsletter(request, object_id)
        name = " ".join(request.user.first_name.split())
        url = settings.SITE_URL + reverse("newsletters:unsubscribe", args=[unsubscribe_token(request.user.pk)])
        bodies, error = {}, None
        try:
            for part, html in (("text", False), ("html", True)):
                source = newsletter.body_html if html else newsletter.body_text
                bodies[part] = source and rendering.render(source, html=html, name=name, unsubscribe_url=url)
        except rendering.BrokenTemplate as broken:
            error = forms.template_error(broken)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": newsletter,
            "title": _("Preview: %(subject)s") % {"subject": newsletter.subject},
            "subtitle": None,
            "name": name,
            "error": error,
            **bodies,
        }
        return TemplateResponse(request, "admin/newsletters/newsletter/preview.html", context)

    def _newsletter(self, request, object_id, *, send: bool = False) -> Newsletter:
        newsletter = self.get_object(request, object_id)
        if newsletter is None:
            raise Http404(_("There is no newsletter %(id)s.") % {"id": object_id})
        if not self.has_view_permission(request, newsletter) or (send and not self.has_send_permission(request)):
            raise PermissionDenied
        return newsletter

    # The list's actions.

    @admin.action(description=gettext_lazy("Send me a test copy"))
    def test_send(self, request, queryset):
        self._test_copies(request, queryset)

    def _test_copies(self, request, newsletters) -> None:
        """Enqueued only for bodies that render: a broken one is said here, not after the job failed."""
        if not request.user.email:
            self.message_user(request, _("Your user has no email address."), messages.ERROR)
            return
        for newsletter in newsletters:
            if broken := forms.broken(newsletter):
                self.message_user(request, _("%(subject)s: no test copy sent. %(error)s")
                                  % {"subject": newsletter.subject, "error": broken}, messages.ERROR)  # fmt: skip
                continue
            enqueue_newsletter_test(
                newsletter_id=newsletter.pk, user_id=request.user.pk, municipality=newsletter.municipality_id
            )
            self.message_user(request, _("%(subject)s: a test copy is on its way to %(email)s.")
                              % {"subject": newsletter.subject, "email": request.user.email})  # fmt: skip

    @admin.action(description=gettext_lazy("Send to every subscriber…"), permissions=["send"])
    def send(self, request, queryset):
        """To the confirmation page: one newsletter at a time, each confirmed with its own figures."""
        chosen = list(queryset[:2])
        if len(chosen) != 1:
            self.message_user(request, _("Choose one newsletter to send: each one is confirmed on its own page."),
                              messages.WARNING)  # fmt: skip
            return None
        return HttpResponseRedirect(_url("send", chosen[0]))

    @admin.action(description=gettext_lazy("Pause sending"), permissions=["send"])
    def pause(self, request, queryset):
        paused = sum(campaigns.pause(newsletter, request.user) for newsletter in queryset)
        self.message_user(
            request, ngettext("%(n)d newsletter paused.", "%(n)d newsletters paused.", paused) % {"n": paused}
        )

    @admin.action(description=gettext_lazy("Resume sending"), permissions=["send"])
    def resume(self, request, queryset):
        for newsletter in queryset:
            count = campaigns.resume(newsletter, request.user)
            self.message_user(request, LEFT % {"subject": newsletter.subject, "n": count})


def _url(name: str, newsletter: Newsletter) -> str:
    return reverse(f"admin:newsletters_newsletter_{name}", args=[newsletter.pk])
