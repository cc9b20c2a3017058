from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from ceres_site.accounts.models import User

from .unsubscribe import user_of

ONE_CLICK = "One-Click"  # RFC 8058: the body of a mail provider's POST, `List-Unsubscribe=One-Click`


@csrf_exempt  # RFC 8058: mail providers POST "List-Unsubscribe=One-Click" here; the signed token is the proof
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request, token):
    """GET asks (link scanners open links), or says it is done when it is; POST unsubscribes, once.

    The page's own button is answered with a redirect to the GET, which then says it is done: a
    reload or the back button shows that, never the question again nor a form sent twice. A mail
    provider's one-click POST gets its answer directly."""
    user_id = user_of(token)
    if user_id is None or not (user := User.objects.filter(pk=user_id).only("newsletter_unsubscribed_at").first()):
        return render(request, "newsletters/unsubscribe.html", {"outcome": "invalid"}, status=400)
    if request.method != "POST":
        if user.newsletter_unsubscribed_at is None:
            return render(request, "newsletters/unsubscribe.html", {"outcome": "confirm"})
        return render(
            request, "newsletters/unsubscribe.html", {"outcome": "done" if "done" in request.GET else "already"}
        )
    changed = User.objects.filter(pk=user_id, newsletter_unsubscribed_at__isnull=True).update(
        newsletter_unsubscribed_at=timezone.now()
    )
    if request.POST.get("List-Unsubscribe") != ONE_CLICK:  # the page's button (pressed twice: done all the same)
        return redirect(request.path + "?done")
    return render(request, "newsletters/unsubscribe.html", {"outcome": "done" if changed else "already"})
