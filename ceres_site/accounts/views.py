import logging

from django.contrib.auth.decorators import login_required
from django.contrib.auth.tokens import default_token_generator
from django.contrib.auth.views import INTERNAL_RESET_SESSION_TOKEN, PasswordResetConfirmView
from django.db import IntegrityError, transaction
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from redis.exceptions import RedisError

from jobs.enqueue.producers import (
    enqueue_email_account_exists,
    enqueue_email_resend,
    enqueue_email_verify,
    enqueue_email_welcome,
    enqueue_optimize_profile_picture,
    enqueue_password_reset_request,
    enqueue_validate_cv,
)

from .forms import NewPasswordForm, PasswordResetForm, ProfileFilesForm, ResendForm, SignupForm
from .limits import limited
from .models import Upload, User
from .tokens import Outcome, token_verify

log = logging.getLogger(__name__)


@require_http_methods(["GET", "POST"])
@limited("signup", "email")
def signup(request):
    """A known address gets the same answer as a new one (the page tells no one who is registered);
    its owner is told by email instead. Both ways hash the password and try one INSERT."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data, municipality = form.cleaned_data, request.municipality
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=User.username_for(data["email"], municipality), email=data["email"],
                    first_name=data["first_name"], password=data["password"], municipality=municipality,
                    verify_requested_at=timezone.now(),
                )  # fmt: skip
                enqueue_email_verify(user_id=user.pk, municipality=municipality.pk)  # when this transaction commits
        except IntegrityError:
            _tell_the_owner(data["email"], municipality.pk)
        return redirect("accounts:signup_done")
    return render(request, "accounts/signup.html", {"form": form})


def _tell_the_owner(email: str, municipality: int) -> None:
    owners = User.objects.filter(municipality=municipality, email__iexact=email)
    owner = owners.values_list("pk", flat=True).first()
    if owner is None:  # the username was taken, not the address (a staff user named like it)
        log.warning("signup refused: the username of a new address is taken")
        return
    try:
        enqueue_email_account_exists(user_id=owner, municipality=municipality)
    except RedisError as error:  # a notice, not a promise: the owner's account is unchanged
        log.error("account-exists email for user %s not enqueued (%s)", owner, type(error).__name__)


def signup_done(request):
    return render(request, "accounts/signup_done.html")


@require_http_methods(["GET", "HEAD", "POST"])
@limited("verify", "selector")
def verify(request):
    """GET (and HEAD) only show the page; its button POSTs the token that the link carries after "#"."""
    if request.method != "POST":
        return render(request, "accounts/verify_confirm.html")
    result = token_verify(selector=request.POST.get("selector", ""), verifier=request.POST.get("verifier", ""))
    if result.outcome is Outcome.VERIFIED:
        enqueue_email_welcome(user_id=result.user.pk, municipality=result.user.municipality_id)
    status = 200 if result.outcome in (Outcome.VERIFIED, Outcome.ALREADY_VERIFIED) else 400
    return render(request, "accounts/verify.html", {"outcome": result.outcome.value}, status=status)


@require_http_methods(["GET", "POST"])
@limited("resend", "email")
def resend(request):
    """The same work and answer for any address: one job, which looks for the account (`jobs`)."""
    form = ResendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email, municipality = form.cleaned_data["email"], request.municipality.pk
        try:
            enqueue_email_resend(email=email, municipality=municipality)
        except RedisError as error:  # recorded for the outbox (`ceres_site.accounts.outbox`): sent once Redis is back
            log.error("resend not enqueued (%s); recorded for the outbox", type(error).__name__)
            waiting = User.objects.filter(
                municipality=municipality, email__iexact=email, email_verified_at__isnull=True
            )
            waiting.update(verify_requested_at=timezone.now())
        return render(request, "accounts/resend_done.html")
    return render(request, "accounts/resend.html", {"form": form})


@require_http_methods(["GET", "POST"])
@limited("password_reset", "email")
def password_reset(request):
    """Like the resend: one job for any address, which looks for the account (`jobs`); one answer."""
    form = PasswordResetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            enqueue_password_reset_request(email=form.cleaned_data["email"], municipality=request.municipality.pk)
        except RedisError as error:  # no record to send it later: the page says to ask again if nothing comes
            log.error("password reset not enqueued (%s)", type(error).__name__)
        return redirect("accounts:password_reset_done")
    return render(request, "accounts/password_reset.html", {"form": form})


def password_reset_done(request):
    return render(request, "accounts/password_reset_done.html")


class PasswordResetConfirm(PasswordResetConfirmView):
    """Django's last step, reached only through `password_reset_link`: the token is in the session."""

    form_class = NewPasswordForm
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")


@sensitive_post_parameters("token")  # out of Django's error reports too
@require_http_methods(["GET", "HEAD", "POST"])
@limited("reset_link", "uidb64")
def password_reset_link(request):
    """The emailed link. GET (and HEAD) show a page whose script POSTs what the link carries after "#";
    a good token goes into the session, where Django's own link would put it, and the person on to
    choose the password (`PasswordResetConfirm`)."""
    if request.method != "POST":
        return render(request, "accounts/password_reset_link.html")
    uidb64, token = request.POST.get("uidb64", ""), request.POST.get("token", "")
    user = PasswordResetConfirm().get_user(uidb64)  # Django's own reading of the uid, bad ones included
    if user is None or not default_token_generator.check_token(user, token):
        return render(request, "accounts/password_reset_confirm.html", {"validlink": False}, status=400)
    request.session[INTERNAL_RESET_SESSION_TOKEN] = token
    return redirect("accounts:password_reset_confirm", uidb64=uidb64)


KINDS = (  # form field, upload kind, producer
    ("cv", Upload.Kind.CV, enqueue_validate_cv),
    ("picture", Upload.Kind.PICTURE, enqueue_optimize_profile_picture),
)


@login_required(login_url="accounts:login")
@require_http_methods(["GET", "POST"])
@limited("upload", "user")
def profile(request):
    """Upload a CV and a picture; the files queue checks them and this page shows how it went."""
    form = ProfileFilesForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            for field, kind, enqueue in KINDS:
                if form.cleaned_data.get(field):
                    _replace_upload(request.user, kind, form.cleaned_data[field], enqueue)
        return redirect("accounts:profile")
    current = {kind: _current_upload(request.user, kind) for _, kind, _ in KINDS}
    return render(request, "accounts/profile.html", {
        "form": form, "cv": current[Upload.Kind.CV], "picture": current[Upload.Kind.PICTURE],
        "checking": any(upload and upload.state == Upload.State.PENDING for upload in current.values()),
    })  # fmt: skip


@login_required(login_url="accounts:login")
@require_http_methods(["GET", "HEAD"])
def profile_picture(request, size):
    """The person's own optimised picture (512 px) or thumbnail (128 px); nobody else's."""
    upload = _current_upload(request.user, Upload.Kind.PICTURE)
    if upload is None or upload.state != Upload.State.ACCEPTED:
        raise Http404
    handle = (upload.thumbnail if size == "thumbnail" else upload.file).open("rb")
    head = handle.read(12)  # stored names carry no extension: the bytes say WebP or JPEG (`pictures`)
    handle.seek(0)
    content_type = "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else "image/jpeg"
    return FileResponse(handle, content_type=content_type)


def _current_upload(user, kind) -> Upload | None:
    return Upload.objects.filter(user=user, kind=kind).exclude(state=Upload.State.SUPERSEDED).order_by("-id").first()


def _replace_upload(user, kind, file, enqueue) -> None:
    previous = _current_upload(user, kind)
    upload = Upload(user=user, kind=kind, size=file.size)
    upload.file.save("upload", file, save=False)
    upload.save()
    if previous is not None:
        Upload.objects.filter(pk=previous.pk).update(state=Upload.State.SUPERSEDED)
        stored = [name for name in (previous.file.name, previous.thumbnail.name) if name]
        transaction.on_commit(lambda: [previous.file.storage.delete(name) for name in stored])
    enqueue(upload_id=upload.pk, replaces=previous.pk if previous else None, municipality=user.municipality_id)
