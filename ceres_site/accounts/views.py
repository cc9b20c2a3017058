import logging

from django.db import IntegrityError, transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from redis.exceptions import RedisError

from jobs.producers import enqueue_email_verify, enqueue_email_welcome

from .forms import ResendForm, SignupForm
from .models import User
from .tokens import Outcome, token_verify

log = logging.getLogger(__name__)


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=data["email"], email=data["email"], first_name=data["first_name"],
                    password=data["password"], verify_requested_at=timezone.now(),
                )  # fmt: skip
                enqueue_email_verify(user_id=user.pk)  # runs when this transaction commits
        except IntegrityError:
            form.add_error("email", _("An account with this email already exists."))
        else:
            return redirect("accounts:signup_done")
    return render(request, "accounts/signup.html", {"form": form})


def signup_done(request):
    return render(request, "accounts/signup_done.html")


@require_http_methods(["GET", "HEAD", "POST"])
def verify(request):
    """GET (and HEAD) only show the page; its button POSTs the token that the link carries after "#"."""
    if request.method != "POST":
        return render(request, "accounts/verify_confirm.html")
    result = token_verify(selector=request.POST.get("selector", ""), verifier=request.POST.get("verifier", ""))
    if result.outcome is Outcome.VERIFIED:
        enqueue_email_welcome(user_id=result.user.pk)
    status = 200 if result.outcome in (Outcome.VERIFIED, Outcome.ALREADY_VERIFIED) else 400
    return render(request, "accounts/verify.html", {"outcome": result.outcome.value}, status=status)


@require_http_methods(["GET", "POST"])
def resend(request):
    form = ResendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.filter(email__iexact=form.cleaned_data["email"]).first()
        if user is not None and not user.is_verified:
            User.objects.filter(pk=user.pk).update(verify_requested_at=timezone.now())
            try:
                enqueue_email_verify(user_id=user.pk)
            except RedisError as error:  # recorded above: `jobs.outbox` sends it once Redis is back
                log.error("resend for user %s not enqueued (%s); the outbox will", user.pk, type(error).__name__)
        # Same answer whether or not the address has an account: the page tells no one who is registered.
        return render(request, "accounts/resend_done.html")
    return render(request, "accounts/resend.html", {"form": form})
