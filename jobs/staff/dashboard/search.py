"""One person's or one job's story in one place: the dashboard's search across every queue, every
state and the dead-letter archive, and the jobs a user's admin page lists."""

from django.apps import apps
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from jobs.failures.final import RELATED_ARGS
from jobs.observability.search import SEARCH_LIMIT, Found, Query
from jobs.observability.search import search as search_everywhere
from jobs.staff.dashboard.access import context, limited_to, may_see_payloads, permission
from jobs.staff.dashboard.archive import outcome_html
from jobs.staff.dashboard.views import _users_matching

MAX_TEXT = 200  # longer than any job id or email address


@permission("view_dashboard")
@require_http_methods(["GET"])
def search(request, admin_site):
    """By a part of a job id, an error, or a user's email (the last two only with `view_payloads`:
    whom a job concerns and what its errors say are its payload); to staff limited to one
    municipality, among its jobs alone."""
    text = request.GET.get("q", "").strip()[:MAX_TEXT]
    payloads = may_see_payloads(request)
    found = None
    if text:
        user_ids = _users_matching(text) if payloads else []
        query = Query(text=text, concerning=concerning(user_ids), payloads=payloads, municipality=limited_to(request))
        found = _with_outcomes(search_everywhere(query))
    return TemplateResponse(
        request,
        "admin/jobs/dashboard/search.html",
        context(request, admin_site, _("Search every queue"), search=text, found=found, limit=SEARCH_LIMIT),
    )


def concerning(user_ids) -> dict[str, list]:
    """What names these users in a job's arguments: their ids, the ids of what they own that jobs
    name (an upload: a rejected CV's email names only the upload), and their email addresses."""
    if not user_ids:
        return {}
    user_model = get_user_model()
    emails = [email for email in user_model.objects.filter(pk__in=user_ids).values_list("email", flat=True) if email]
    found: dict[str, list] = {"email": emails} if emails else {}
    for arg, label in RELATED_ARGS.items():
        model = apps.get_model(label)
        if model is user_model:
            found[arg] = list(user_ids)
            continue
        owner = next((f.name for f in model._meta.get_fields() if f.many_to_one and f.related_model is user_model), "")
        if owner:
            found[arg] = list(model.objects.filter(**{f"{owner}__in": user_ids}).values_list("pk", flat=True))
    return found


def jobs_of_user(user_id: int) -> Found:
    """Every job still in Redis and every archived failure that concerned the user, newest first."""
    return _with_outcomes(search_everywhere(Query(concerning=concerning([user_id]), payloads=True)))


def _with_outcomes(found: Found) -> Found:
    for hit in found.hits:
        if hit.dead_letter is not None and hit.dead_letter.retried_at:
            hit.outcome = outcome_html(hit.dead_letter)
    return found
