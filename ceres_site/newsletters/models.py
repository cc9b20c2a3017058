from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from ceres_site.municipalities.models import Municipality, OfDefaultMunicipality


class Newsletter(OfDefaultMunicipality, models.Model):
    """A mass mailing composed by staff. Its bodies are Django templates: `{{ name }}` and
    `{{ unsubscribe_url }}` are filled in per recipient. Audience: its municipality's verified users
    who have not unsubscribed, as they are when it is sent; it goes out under that municipality's name."""

    class State(models.TextChoices):
        DRAFT = "draft", _("draft")
        SENDING = "sending", _("sending")
        PAUSED = "paused", _("paused")
        SENT = "sent", _("sent")

    municipality = models.ForeignKey(
        Municipality, verbose_name=_("municipality"), on_delete=models.PROTECT, related_name="newsletters"
    )  # filled by `save` (`OfDefaultMunicipality`)
    subject = models.CharField(_("subject"), max_length=200)
    body_text = models.TextField(_("text body"), help_text=_("Template: {{ name }}, {{ unsubscribe_url }}."))
    body_html = models.TextField(_("HTML body"), blank=True, help_text=_("Optional; the same variables."))
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.DRAFT)
    recipients = models.PositiveIntegerField(_("recipients"), default=0)  # the audience when it was sent
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    sent_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("sent by"), null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")  # fmt: skip

    class Meta:
        verbose_name = _("newsletter")
        verbose_name_plural = _("newsletters")
        ordering = ["-created_at"]
        permissions = [("send_newsletter", _("Can send, pause and resume newsletters"))]

    def __str__(self) -> str:
        return self.subject


class Delivery(models.Model):
    """One recipient's copy, recorded when the server took it: a job run again sends nothing."""

    newsletter = models.ForeignKey(
        Newsletter, verbose_name=_("newsletter"), on_delete=models.CASCADE, related_name="deliveries"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+"
    )
    sent_at = models.DateTimeField(_("sent at"), auto_now_add=True)

    class Meta:
        verbose_name = _("newsletter delivery")
        verbose_name_plural = _("newsletter deliveries")
        constraints = [models.UniqueConstraint(fields=["newsletter", "user"], name="newsletters_delivery_once")]
