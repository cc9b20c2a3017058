from django import forms
from django.conf import settings
from django.contrib.auth.forms import SetPasswordForm, SetPasswordMixin
from django.contrib.auth.password_validation import validate_password
from django.utils.translation import gettext_lazy as _

from .models import User


class EmailField(forms.EmailField):
    """An address in one spelling per mailbox: lower case, the domain in ASCII (`münchen.de` and
    `xn--mnchen-3ya.de` are one domain), so one mailbox cannot hold two accounts."""

    def to_python(self, value):
        email = super().to_python(value).lower()
        local, at, domain = email.rpartition("@")
        try:
            return f"{local}{at}{domain.encode('idna').decode('ascii')}" if at and not domain.isascii() else email
        except UnicodeError:
            raise forms.ValidationError(_("Enter a valid email address."), code="invalid") from None


class SignupForm(forms.Form):
    email = EmailField(label=_("Email"), max_length=150)  # it is the username too, 150 characters at most
    first_name = forms.CharField(label=_("First name"), max_length=150)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)

    def clean_first_name(self):
        name = self.cleaned_data["first_name"]
        if any(ch in name for ch in "\r\n\t\x00"):
            raise forms.ValidationError(_("The name cannot contain line breaks or control characters."))
        return name

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("password"):
            candidate = User(email=cleaned.get("email", ""), first_name=cleaned.get("first_name", ""))
            try:
                validate_password(cleaned["password"], candidate)
            except forms.ValidationError as error:
                self.add_error("password", error)
        return cleaned


class ResendForm(forms.Form):
    email = EmailField(label=_("Email"), max_length=254)


class PasswordResetForm(ResendForm):
    """The same one field: the address whose account gets the link."""


class NewPasswordForm(SetPasswordForm):
    """Django's form for the reset's last step, in our words (its help texts are not shown)."""

    error_messages = {"password_mismatch": _("The two passwords do not match.")}
    new_password1, new_password2 = SetPasswordMixin.create_password_fields(
        label1=_("New password"), label2=_("Repeat the new password")
    )


class ProfileFilesForm(forms.Form):
    """A CV and a picture, each optional; what they hold is judged by the files queue, not here."""

    cv = forms.FileField(label=_("CV (PDF or Word .docx, up to 5 MB)"), required=False)
    picture = forms.FileField(label=_("Profile picture (up to 10 MB)"), required=False)

    def clean_cv(self):
        return _at_most(self.cleaned_data.get("cv"), settings.CV_MAX_BYTES)

    def clean_picture(self):
        return _at_most(self.cleaned_data.get("picture"), settings.PICTURE_MAX_BYTES)

    def clean(self):
        cleaned = super().clean()
        if not self.errors and not cleaned.get("cv") and not cleaned.get("picture"):
            raise forms.ValidationError(_("Choose a file to upload."))
        return cleaned


def _at_most(upload, limit: int):
    if upload is not None and upload.size > limit:
        raise forms.ValidationError(_("The file is larger than %(mb)d MB.") % {"mb": limit // (1024 * 1024)})
    return upload
