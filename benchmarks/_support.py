"""Shared parts of the benchmarks: the machine header, the SMTP sink process, worker processes started
as `ecosystem/Procfile` starts them, process PSS and CPU from /proc, Redis command counts, tables.

Not a benchmark itself; `email_path.py` and `sigkill_recovery.py` import it (they run with
`benchmarks/` first on sys.path).
"""

import functools
import itertools
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")
    import django

    django.setup()


@functools.cache
def town() -> int:
    """The default municipality's id: the benchmarks' users belong to it, and their jobs name it."""
    from ceres_site.municipalities.models import default_pk

    return default_pk()


def prepared_services():
    """Django set up, the database migrated, the queues' Redis database empty; returns its client."""
    setup_django()
    import django_rq
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    conn = django_rq.get_connection("email")
    conn.flushdb()
    return conn


# --- the header --------------------------------------------------------------------------------


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return parts.geturl()


def header(title: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Print (and return) the machine, the versions and the command line."""
    import django
    import django_rq
    import redis
    import rq
    from django.db import connection

    conn = django_rq.get_connection("email")
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bin/with-test-services -- " + shlex.join(sys.orig_argv),
        "machine": f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"{mem_total_gib():.1f} GiB RAM, Linux {platform.release()}",
        "load average at start": loadavg(),
        "versions": f"Python {platform.python_version()}, rq {rq.__version__}, Django {django.get_version()}, "
        f"django-rq {_dist_version('django-rq')}, redis-py {redis.__version__}, "
        f"redis-server {conn.info('server')['redis_version']}, PostgreSQL {_pg_version(connection)}",
        "services": f"REDIS_URL={masked(os.environ.get('REDIS_URL', ''))}, "
        f"DATABASE_URL={masked(os.environ.get('DATABASE_URL', ''))}",
        **(extra or {}),
    }
    print(f"# {title}")
    for key, value in info.items():
        print(f"{key}: {value}")
    print(flush=True)
    return info


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return "?"


def _pg_version(connection) -> str:
    if connection.vendor != "postgresql":
        return f"(not PostgreSQL: {connection.vendor})"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]


# --- statistics and tables -----------------------------------------------------------------------


def med(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def spread(values, fmt: str = "{:.0f}") -> str:
    """`median (min–max)`."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- /proc ---------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    found = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found[ppid].append(int(entry.name))
    return found


def tree(roots: list[int]) -> list[int]:
    kids, found, todo = _children_map(), [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += kids.get(pid, [])
    return found


def pss_kib(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)


def cpu_seconds(pid: int) -> float:
    """user + system time of the process and of its children it has reaped (work-horses)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / CLK_TCK


def tree_pss_mib(roots: list[int]) -> tuple[float, int]:
    pids = tree(roots)
    return sum(pss_kib(pid) for pid in pids) / 1024, len(pids)


def tree_cpu(roots: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in tree(roots))


# --- the SMTP sink -------------------------------------------------------------------------------


class Sink:
    """`_smtp_sink.py` as a child process; a thread reads its `D <t> <rcpts>` lines into `events`."""

    def __init__(self):
        self.process = subprocess.Popen(
            [PYTHON, str(ROOT / "benchmarks" / "_smtp_sink.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the SMTP sink did not start: {ready}")
        self.port = int(ready[1])
        self.events: list[tuple[float, tuple[str, ...]]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            kind, moment, rcpts = (line.rstrip("\n").split(" ", 2) + [""])[:3]
            if kind == "D":
                with self._lock:
                    self.events.append((float(moment), tuple(rcpts.split(",")) if rcpts else ()))

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, mark: int) -> list[tuple[float, tuple[str, ...]]]:
        with self._lock:
            return self.events[mark:]

    def wait_distinct(self, mark: int, count: int, timeout: float) -> tuple[float | None, int]:
        """The sink time at which the `count`-th distinct recipient since `mark` arrived (None if not
        within `timeout`), and how many distinct recipients had arrived."""
        seen, index, deadline = set(), mark, time.monotonic() + timeout
        while True:
            with self._lock:
                new, index = self.events[index:], len(self.events)
            for moment, rcpts in new:
                seen.update(rcpts)
                if len(seen) >= count:
                    return moment, len(seen)
            if time.monotonic() > deadline:
                return None, len(seen)
            time.sleep(0.01)

    def wait_messages(self, mark: int, count: int, timeout: float) -> float | None:
        """The sink time of the `count`-th message since `mark`, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.events) - mark >= count:
                    return self.events[mark + count - 1][0]
            time.sleep(0.005)
        return None

    def hold(self, seconds: float) -> None:
        self.process.stdin.write(f"HOLD {seconds}\n")
        self.process.stdin.flush()

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        try:
            self.process.stdin.write("QUIT\n")
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()


# --- worker processes ----------------------------------------------------------------------------


def worker_env(smtp_port: int, **extra) -> dict:
    """What a worker of the Procfile gets, pointed at the sink: the wrapper's DATABASE_URL, REDIS_URL,
    DJANGO_SECRET_KEY and DEBUG, the virtualenv first on PATH, unbuffered logs."""
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "PYTHONUNBUFFERED": "1",
        "JOB_EXTRA_TASK_MODULES": "benchmarks._jobs",  # the trivial jobs of the latency measure
        **extra,
    }
    if not env.get("DJANGO_SECRET_KEY"):
        env["DEBUG"] = "1"
    return env


_log_numbers = itertools.count(1)


class Workers:
    """Processes started with `exec <argv>` semantics (each its own session, as honcho/PM2/systemd
    give each process its own group), logs in files under `log_dir`."""

    def __init__(self, log_dir: Path, env: dict):
        self.log_dir = log_dir
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, argv: list[str], label: str, cwd: Path = ROOT, stdout=None) -> subprocess.Popen:
        path = self.log_dir / f"{next(_log_numbers):03d}-{label}.log"
        self.logs.append(path)
        log = open(path, "wb")
        process = subprocess.Popen(
            argv, cwd=cwd, env=self.env, stdout=stdout or log, stderr=log, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.poll() is None]

    def pss_mib(self) -> tuple[float, int]:
        return tree_pss_mib(self.pids)

    def cpu(self) -> float:
        return tree_cpu(self.pids)

    def stop(self, timeout: float = 30) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes = []

    def errors(self) -> list[str]:
        """Log lines that say something went wrong."""
        found = []
        for path in self.logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            found += [line for line in text.splitlines() if re.search(r"ERROR|CRITICAL|Traceback|Exception", line)]
        return found


def rqworker_argv(*queue_names: str, options: tuple[str, ...] = ()) -> list[str]:
    """`python manage.py rqworker <queues> --with-scheduler`, as the Procfile line (PATH has .venv/bin)."""
    return [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "rqworker", *queue_names, "--with-scheduler", *options]


def registered(conn, queue_name: str) -> int:
    from jobs.rq_compat import workers_of_queue_key

    return conn.scard(workers_of_queue_key(queue_name))


def wait_registered(conn, queue_name: str, count: int, timeout: float = 60, processes=()) -> float:
    """Seconds until `count` workers of `queue_name` are registered in Redis."""
    started = time.monotonic()
    while registered(conn, queue_name) < count:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited with {process.returncode} before registering")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{count} workers of {queue_name} not registered within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


# --- Redis ---------------------------------------------------------------------------------------


def commandstats(conn) -> dict[str, int]:
    """Calls per command since the server started (commands run inside Lua scripts included)."""
    stats = conn.info("commandstats")
    return {name.removeprefix("cmdstat_"): values["calls"] for name, values in stats.items()}


def command_delta(before: dict[str, int], after: dict[str, int], ignore=("info",)) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {name: calls for name, calls in delta.items() if calls > 0 and name not in ignore}


def redis_host_port(url: str) -> tuple[str, int, str | None]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379, parts.password


def service_pids(conn) -> dict[str, int]:
    """The redis-server and PostgreSQL postmaster pids (on this host), for their CPU time."""
    found = {}
    try:
        found["redis"] = int(conn.info("server")["process_id"])
    except Exception:
        pass
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            data = cursor.fetchone()[0]
        found["postgres"] = int(Path(data, "postmaster.pid").read_text().split()[0])
    except Exception:
        pass
    return found


def thread_cpu() -> float:
    """CPU seconds of the calling thread (the producer loop)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def finish(errors: list[str], log_dir: Path, keep_logs: bool) -> None:
    """Print the first error lines of the workers' logs, then keep or remove the logs."""
    if errors:
        print(f"\n{len(errors)} error lines in the workers' logs; the first ones:")
        for line in errors[:10]:
            print("  " + line[:300])
    if keep_logs:
        print(f"\nworker logs kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
