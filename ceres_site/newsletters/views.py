from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from ceres_site.accounts.models import User

from .unsubscribe import user_of


@csrf_exempt  # RFC 8058: mail providers POST "List-Unsubscribe=One-Click" here; the signed token is the proof
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request, token):
    """GET shows a button (link scanners open links); POST unsubscribes, once."""
    user_id = user_of(token)
    if user_id is None or not User.objects.filter(pk=user_id).exists():
        return render(request, "newsletters/unsubscribe.html", {"outcome": "invalid"}, status=400)
    if request.method != "POST":
        return render(request, "newsletters/unsubscribe.html", {"outcome": "confirm"})
    changed = User.objects.filter(pk=user_id, newsletter_unsubscribed_at__isnull=True).update(
        newsletter_unsubscribed_at=timezone.now()
    )
    return render(request, "newsletters/unsubscribe.html", {"outcome": "done" if changed else "already"})
