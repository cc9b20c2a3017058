"""Rate limits on the pages an attacker would hammer: signup, resend, verify, the password reset (its
request and its link), the admin login and the profile's uploads (each one a job of the files queue).

django-ratelimit counts the POSTs of each view per client address and per account (the email,
token selector or username typed, or the signed-in account), with the rates of `settings.RATE_LIMITS`; past one, the view
answers 429 in Spanish (`too_many_requests`). The counters live in the queues' Redis, through this
process's client (`LimitCache`), so every web process shares them and a Sentinel failover moves
them along. When Redis is down or frozen nothing is counted and the pages keep working: a signup
must still reach the outbox (`ceres_site.accounts.outbox`), and limiting everyone is worse than limiting no one
for the minutes Redis is away.
"""

import logging
import time

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ValidationError
from django.shortcuts import render
from django_ratelimit.decorators import ratelimit
from redis.exceptions import RedisError

from jobs.enqueue import clients

from .forms import EmailField

log = logging.getLogger(__name__)

REDIS_PAUSE = 5.0  # seconds to leave Redis alone after an error: a frozen one would hold every request


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or the `X-Real-IP` a trusted proxy (nginx) set."""
    address = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_REAL_IP", "").strip()
    return forwarded if forwarded and address in settings.TRUSTED_PROXIES else address


def limited(name: str, field: str):
    """Limit the view's POSTs per client address (rate `<name>-ip`) and per value of the form
    field `field` (rate `<name>-<field>`), or per signed-in account when `field` is "user"."""
    key = "user" if field == "user" else _field_key(field)

    def decorate(view):
        view = ratelimit(group=f"{name}-{field}", key=key, rate=_rate, method="POST")(view)
        return ratelimit(group=f"{name}-ip", key="ip", rate=_rate, method="POST")(view)

    return decorate


def too_many_requests(request, exception):
    """`RATELIMIT_VIEW`: the answer once a limit is reached."""
    response = render(request, "429.html", status=429)
    response["Retry-After"] = "600"
    return response


def _rate(group: str, request) -> str:
    return settings.RATE_LIMITS[group]


def _field_key(field: str):
    def key(group: str, request) -> str:
        value = request.POST.get(field, "")
        if field == "email":  # one mailbox, one counter, however it is spelled
            try:
                return EmailField().to_python(value)
            except ValidationError:
                pass
        return value.strip().lower()

    return key


class LimitCache(BaseCache):
    """The cache django-ratelimit counts in (`CACHES["ratelimit"]`): the few calls it makes, on the
    queues' Redis client. On a Redis error it counts nothing (`None`: django-ratelimit then lets the
    request through, with `RATELIMIT_FAIL_OPEN`) and leaves Redis alone for `REDIS_PAUSE` seconds."""

    _paused_until = 0.0

    @classmethod
    def resume(cls) -> None:
        """Count in Redis again from the next request on, paused or not (another Redis: tests)."""
        cls._paused_until = 0.0

    def __init__(self, location, params):
        super().__init__(params)  # no location of its own: the queues' Redis

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        ttl = max(int(self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout), 1)
        return bool(self._redis(lambda redis: redis.set(key, value, nx=True, ex=ttl)))

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        # INCR on a key that just expired would make one without a TTL: a counter for ever.
        count = self._redis(lambda redis: redis.eval(_INCR_EXISTING, 1, key, delta))
        if count is None:
            raise ValueError(f"key {key!r} not found or Redis unavailable")  # BaseCache's contract
        return count

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version=version)
        value = self._redis(lambda redis: redis.get(key))
        return default if value is None else int(value)

    def _redis(self, call):
        if time.monotonic() < LimitCache._paused_until:
            return None
        try:
            return call(clients.redis())
        except RedisError as error:
            LimitCache._paused_until = time.monotonic() + REDIS_PAUSE
            log.warning("rate limits not counted for %.0f s: Redis %s", REDIS_PAUSE, type(error).__name__)
            return None


_INCR_EXISTING = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end"
