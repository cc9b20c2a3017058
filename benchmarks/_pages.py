"""What the page benchmarks share: a signed-in client on a throwaway database, a page's median server
time, and the table of it at each size."""

import statistics
import time
from contextlib import contextmanager


def median_ms(client, path: str, runs: int, ok: tuple[int, ...] = (200,)) -> float:
    """Median of `runs` GETs of `path` after a warm-up one, in ms; each must answer one of `ok`."""
    client.get(path)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code in ok, (path, response.status_code)
    return statistics.median(times)


def print_sizes(results: dict[int, dict[str, float]], runs: int) -> None:
    """One row a page, one column a size, and the ratio of the largest size to the smallest."""
    sizes = sorted(results)
    names = list(results[sizes[0]])
    width = max(len(name) for name in names) + 2
    print(f"median server time of {runs} runs (ms)")
    print(f"{'page':<{width}}" + "".join(f"{size:>12,} jobs" for size in sizes) + f"{'ratio':>10}")
    for name in names:
        small, large = results[sizes[0]][name], results[sizes[-1]][name]
        print(
            f"{name:<{width}}" + "".join(f"{results[size][name]:>17.1f}" for size in sizes) + f"{large / small:>10.2f}"
        )


@contextmanager
def staff_client():
    """A throwaway test database, destroyed on the way out, and a client signed in as a superuser."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        client = Client()
        client.force_login(get_user_model().objects.create_superuser(username="bench", password="x",
                                                                      email="bench@example.com"))  # fmt: skip
        yield client
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
