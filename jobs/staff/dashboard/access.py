"""What every dashboard page shares: its permission check, the queue it names, its template context.
Pages are wrapped by `admin_site.admin_view` (staff login, CSRF, never cached); each checks its own
permission, and only POSTs change anything.
"""

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from jobs.config import policies, tenancy


def permission(codename: str):
    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perm(f"jobs.{codename}"):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def limited_to(request) -> int | None:
    """The municipality this staff member sees and acts on alone (`jobs.config.tenancy.scope_of`)."""
    return tenancy.scope_of(request.user)


def whole_platform(view):
    """A page or action over every municipality's jobs (counts, lists, queues, triage): refused to
    staff limited to one municipality, who reach their jobs one by one (`job_detail`, `action`)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if limited_to(request) is not None:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def known_queue(name: str) -> str:
    if name not in policies.QUEUES:
        raise Http404
    return name


def context(request, admin_site, title, **extra):
    return {
        **admin_site.each_context(request),
        "title": title,
        "opts": {"app_label": "jobs", "app_config": {"verbose_name": _("Queues and jobs")}},
        "can_operate": request.user.has_perm("jobs.operate_jobs"),
        "can_destroy": request.user.has_perm("jobs.destroy_jobs"),
        "can_view_payloads": may_see_payloads(request),
        **extra,
    }


def may_see_payloads(request) -> bool:
    return request.user.has_perm("jobs.view_payloads")


def post_or_back(view):
    """A change is a POST. A GET of its address (a reload, a pasted link) goes to the queue's page
    instead of a bare 405; other methods get the 405."""

    @wraps(view)
    def wrapper(request, admin_site, queue_name, *args, **kwargs):
        if request.method == "GET":
            page = reverse(f"{admin_site.name}:jobs_dashboard_list", args=[known_queue(queue_name), "queued"])
            return HttpResponseRedirect(page)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return view(request, admin_site, queue_name, *args, **kwargs)

    return wrapper
