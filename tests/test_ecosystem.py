"""The three process formats come from the queue policies and cannot drift from them."""

import json
import shlex
import shutil
import subprocess
from collections import Counter

import pytest

from jobs.config.policies import QUEUES
from jobs.config.processes import STOP_TIMEOUT, ecosystem_files, processes
from tests.conftest import BASE_DIR


@pytest.mark.parametrize("name", sorted(ecosystem_files()))
def test_committed_files_are_what_the_policies_generate(name):
    assert (BASE_DIR / "ecosystem" / name).read_text() == ecosystem_files()[name], (
        f"ecosystem/{name} is stale: run `python manage.py write_ecosystem`"
    )


def procfile_commands() -> dict[str, list[str]]:
    lines = (BASE_DIR / "ecosystem" / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): shlex.split(command) for name, command in entries}


def test_the_procfile_serves_every_queue_with_its_concurrency_and_retry_scheduler():
    commands = procfile_commands()
    served = Counter()
    for name, argv in commands.items():
        if name.startswith("worker"):
            assert argv[:4] == ["exec", "python", "manage.py", "rqworker"] and "--with-scheduler" in argv, argv
            for queue in argv[4:-1]:
                # all the slots of its queues: as threads (in-process) or forked processes (`jobs.runtime.family`)
                served[queue] += QUEUES[queue].concurrency

    assert served == {name: policy.concurrency for name, policy in QUEUES.items()}
    assert commands["worker-isolated"][4:-1] == [name for name, policy in QUEUES.items() if not policy.in_process]
    assert (
        commands["worker"][4:-1]
        == [name for name, policy in QUEUES.items() if policy.in_process]
        == ["email", "slack", "bulk", "bulk-own"]
    )
    assert commands["web"][:2] == ["exec", "gunicorn"]
    assert commands["scheduler"][:4] == ["exec", "python", "manage.py", "rqscheduler"]


def test_pm2_runs_the_same_set_and_waits_for_jobs_on_stop():
    node = shutil.which("node")
    assert node, "node is needed for the PM2 config (bin/test installs it)"
    script = "console.log(JSON.stringify(require(process.argv[1])))"
    config = json.loads(subprocess.run([node, "-e", script, str(BASE_DIR / "ecosystem" / "ecosystem.config.js")],
                                       capture_output=True, text=True, check=True).stdout)  # fmt: skip

    apps = {app["name"]: app for app in config["apps"]}
    assert set(apps) == {f"ceres-{process.name}" for process in processes()}
    assert apps["ceres-worker"]["instances"] == 1 and apps["ceres-worker"]["args"][:6] == [
        "manage.py",
        "rqworker",
        "email",
        "slack",
        "bulk",
        "bulk-own",
    ]
    isolated = [name for name, policy in QUEUES.items() if not policy.in_process]
    assert apps["ceres-worker-isolated"]["args"] == ["manage.py", "rqworker", *isolated, "--with-scheduler"]
    assert all(app["instances"] == 1 for app in apps.values())
    assert all(app["kill_timeout"] == STOP_TIMEOUT * 1000 > max(p.timeout for p in QUEUES.values()) * 1000
               for app in apps.values())  # fmt: skip
    assert apps["ceres-web"]["cwd"] == str(BASE_DIR)


def test_systemd_target_wants_one_unit_per_process():
    target = (BASE_DIR / "ecosystem" / "systemd" / "ceres.target").read_text()
    wants = next(line for line in target.splitlines() if line.startswith("Wants=")).split("=", 1)[1].split()

    assert wants == [f"ceres-{process.name}.service" for process in processes()]
    for unit in wants:
        text = (BASE_DIR / "ecosystem" / "systemd" / unit).read_text()
        assert "KillMode=mixed" in text and f"TimeoutStopSec={STOP_TIMEOUT}" in text


def test_more_in_process_workers_reach_every_format(monkeypatch):
    from jobs.config import processes as process_set

    monkeypatch.setattr(process_set, "IN_PROCESS_WORKERS", "auto")
    files = ecosystem_files()

    assert (
        "worker: exec python manage.py rqworker email slack bulk bulk-own --with-scheduler --processes auto\n"
        in files["Procfile"]
    )
    assert '"--with-scheduler",\n        "--processes",\n        "auto"\n' in files["ecosystem.config.js"]
    unit = next(text for name, text in files.items() if name.endswith("ceres-worker.service"))
    assert "rqworker email slack bulk bulk-own --with-scheduler --processes auto" in unit
