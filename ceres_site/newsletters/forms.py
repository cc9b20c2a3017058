"""The newsletter's change form: both bodies must render, and staff read why one does not."""

from django import forms
from django.utils.translation import gettext as _

from . import rendering
from .models import Newsletter


class NewsletterForm(forms.ModelForm):
    """Both bodies must render: a broken one is refused here, not found by the first job. A draft
    left without a municipality is the default one's (`Newsletter.save`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "municipality" in self.fields:
            self.fields["municipality"].required = False
            self.fields["municipality"].help_text = _("Blank: the default municipality.")

    def clean_body_text(self):
        return _checked(self.cleaned_data["body_text"], html=False)

    def clean_body_html(self):
        return _checked(self.cleaned_data["body_html"], html=True)


def _checked(source: str, *, html: bool) -> str:
    try:
        rendering.check(source, html=html)
    except rendering.BrokenTemplate as error:
        raise forms.ValidationError(template_error(error), code="template") from None
    return source


def broken(newsletter: Newsletter) -> str | None:
    """What is wrong with its bodies, said for staff; None when both render."""
    try:
        for source, html in ((newsletter.body_text, False), (newsletter.body_html, True)):
            rendering.check(source, html=html)
    except rendering.BrokenTemplate as error:
        return template_error(error)
    return None


def template_error(error: rendering.BrokenTemplate) -> str:
    """In Spanish, with the engine's own words (in English) as the detail to look for."""
    if error.line is None:
        return _("This template has an error. Detail: %(detail)s") % {"detail": error.detail}
    return _("This template has an error on line %(line)d. Detail: %(detail)s") % {
        "line": error.line,
        "detail": error.detail,
    }
