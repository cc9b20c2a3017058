"""Server time of resend and signup by the state of the address typed: what an attacker measures to
learn who has an account (issue 10 found resend at 11.5 / 8.2 / 6.6 ms for unverified / verified /
unknown addresses).

Run:  bin/with-test-services -- .venv/bin/python benchmarks/account_pages.py
It uses a throwaway test database and flushes the Redis database it is pointed at. The states are
measured interleaved, each address once (rate limits raised out of the way); prints the median and
the ratio of each state to the unknown address's.
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")

import django  # noqa: E402

django.setup()

import django_rq  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

RESENDS = 300  # per state
SIGNUPS = 15  # per state: each hashes a password (~0.3 s)
PASSWORD = "una-clave-bien-larga-42"


def timed(client: Client, path: str, data: dict, expected: int) -> float:
    started = time.perf_counter()
    response = client.post(path, data)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == expected, response.status_code
    return elapsed


def measure(client: Client, path: str, states: dict[str, list[dict]], expected: int) -> dict[str, float]:
    times = {state: [] for state in states}
    names = list(states)
    for n, round_ in enumerate(zip(*states.values(), strict=True)):  # interleaved: drift hits all alike
        order = [(names[i], round_[i]) for i in range(len(names))]
        for state, data in order[n % len(order) :] + order[: n % len(order)]:  # and so does position
            times[state].append(timed(client, path, data, expected))
    return {state: statistics.median(values) for state, values in times.items()}


def report(title: str, medians: dict[str, float], runs: int) -> None:
    print(f"{title}: median server time of {runs} requests per state (ms)")
    base = medians["unknown"]
    for state, value in medians.items():
        print(f"  {state:<12}{value:>8.2f}{value / base:>8.2f}×")


def main() -> None:
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    limits = {name: "1000000/h" for name in settings.RATE_LIMITS}
    try:
        from ceres_site.accounts.models import User

        django_rq.get_queue("email").connection.flushdb()
        make = User.objects.create_user
        for n in range(max(RESENDS, SIGNUPS)):
            make(username=f"u{n}@example.com", email=f"u{n}@example.com")
            make(username=f"v{n}@example.com", email=f"v{n}@example.com", email_verified_at=timezone.now())
        client = Client()
        with override_settings(RATE_LIMITS=limits):
            client.post(reverse("accounts:resend"), {"email": "warm@example.com"})
            resend = measure(client, reverse("accounts:resend"), {
                "unverified": [{"email": f"u{n}@example.com"} for n in range(RESENDS)],
                "verified": [{"email": f"v{n}@example.com"} for n in range(RESENDS)],
                "unknown": [{"email": f"x{n}@example.com"} for n in range(RESENDS)],
            }, 200)  # fmt: skip
            signup = measure(client, reverse("accounts:signup"), {
                "registered": [{"email": f"u{n}@example.com", "first_name": "Ana", "password": PASSWORD} for n in range(SIGNUPS)],
                "unknown": [{"email": f"new{n}@example.com", "first_name": "Ana", "password": PASSWORD} for n in range(SIGNUPS)],
            }, 302)  # fmt: skip
        django_rq.get_queue("email").connection.flushdb()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    report("resend", resend, RESENDS)
    report("signup", signup, SIGNUPS)


if __name__ == "__main__":
    main()
