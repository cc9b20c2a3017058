"""The municipality a request acts for, resolved from its host name, and `current()` for the code it
runs. Resolved when first asked, not for every request: pages that never ask (the health checks,
static files) need no database, as during a PostgreSQL restart."""

from collections.abc import Callable
from contextvars import ContextVar

from django.http import Http404, HttpRequest, HttpResponse
from django.http.request import split_domain_port
from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext as _

from .models import Municipality

_current: ContextVar[Municipality | None] = ContextVar("municipality", default=None)


def current() -> Municipality:
    """The municipality of the request being answered; outside a request, the default one."""
    return _current.get() or Municipality.objects.default()


def for_request(request: HttpRequest) -> Municipality:
    """The municipality whose host names include the request's host (one query); the default one
    for a host (in ALLOWED_HOSTS) that no municipality names. Http404 for an inactive one's host."""
    host, _port = split_domain_port(request.get_host())
    found = Municipality.objects.for_host(host)
    if not found.active:
        raise Http404(_("This municipality's site is not available."))
    return found


class CurrentMunicipality:
    """Sets `request.municipality` and `current()` for the request, both resolved at their first use."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.municipality = SimpleLazyObject(lambda: for_request(request))
        token = _current.set(request.municipality)
        try:
            return self.get_response(request)
        finally:
            _current.reset(token)
