"""Slack queue task: post one message to the incoming webhook.

The webhook URL is a secret: the job carries only the text (and its municipality's id), the worker
reads the URL from settings or the municipality's environment variable, and no exception raised
here mentions it (requests puts URLs in its messages, so they are replaced).
Slack's answers: 200 is done; 429 retries after its Retry-After (within the queue's retry budget);
5xx, timeouts and network errors retry; any other 4xx (invalid_payload, no_service,
channel_not_found…) is permanent.

Posts go through one `requests.Session` per worker thread, so consecutive posts reuse one kept-alive
HTTPS connection instead of a TLS handshake each. The session reads the environment's proxy and CA
settings once: requests reads them, and looks for a ~/.netrc, again for every post otherwise (180 of
a local post's 780 µs of CPU).
"""

import logging
import os
import threading

import requests
from django.conf import settings
from django.utils.translation import gettext as _

from jobs.config import tenancy
from jobs.enqueue import clients
from jobs.failures.attempts import PermanentJobError
from jobs.observability import metrics

log = logging.getLogger(__name__)

RETRY_AFTER_MAX = 300  # a longer Retry-After is capped: the alert matters more than the quota

_local = threading.local()


class SlackUnavailable(Exception):
    """Slack could not take the message now; the job retries."""


class SlackRateLimited(SlackUnavailable):
    def __init__(self, retry_after: int):
        super().__init__(f"Slack rate limit: retry after {retry_after} s")
        self.retry_after = retry_after


def post_to_slack(text: str, municipality: int | None = None) -> str:
    """Post `text` to `municipality`'s webhook, or the platform's (`jobs.config.tenancy.webhook_for`)."""
    url = tenancy.webhook_for(municipality)
    if not url:
        log.error("Slack webhook not configured (SLACK_WEBHOOK_URL); alert not sent: %s", text)
        return _("skipped: no webhook configured")
    try:
        response = _session(url).post(url, json={"text": text}, timeout=(3.05, settings.SLACK_TIMEOUT))
    except requests.Timeout:
        raise SlackUnavailable("Slack did not answer in time") from None
    except requests.RequestException as exc:
        raise SlackUnavailable(f"cannot reach Slack ({type(exc).__name__})") from None
    body = response.text[:200]
    if response.status_code == 200:
        metrics.count(clients.redis(), "slack_messages_sent", "slack")
        return _("sent to Slack")
    if response.status_code == 429:
        raise SlackRateLimited(_retry_after(response))
    if response.status_code >= 500:
        raise SlackUnavailable(f"Slack answered {response.status_code}: {body}")
    raise PermanentJobError(
        _("Slack refused the message (%(code)d: %(body)s)") % {"code": response.status_code, "body": body}
    )


def _retry_after(response) -> int:
    try:
        return min(max(int(response.headers.get("Retry-After", "1")), 1), RETRY_AFTER_MAX)
    except ValueError:
        return 1


def _session(url: str) -> requests.Session:
    """This thread's session for `url`. One made before a fork holds the parent's sockets: never used
    in the child."""
    if getattr(_local, "owner", None) != (os.getpid(), url):
        session = requests.Session()
        found = session.merge_environment_settings(url, {}, None, None, None)  # HTTPS_PROXY, NO_PROXY, CA bundle
        session.trust_env = False
        session.proxies, session.verify = found["proxies"], found["verify"]
        _local.session, _local.owner = session, (os.getpid(), url)
    return _local.session
