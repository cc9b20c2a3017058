"""What a running task tells staff: how far it got (0–100 and a short message) and log lines.

Both live in the job's own hash (its meta), so they go when the job goes (finished and failed jobs
expire, deleting one deletes them); only the last `LOG_LINES` lines are kept, each cut to
`LINE_CHARS`. The job page shows them, refreshed live; log lines count as payload (they may hold
what the task read), so only staff with `view_payloads` see them. Called outside a job: no effect.

    from jobs.observability import progress
    progress.report(40, "3 of 7 files")
    progress.log("skipped cv-12.pdf: encrypted")
"""

from rq import get_current_job

from jobs.rq_compat import now, utcformat

LOG_LINES = 200
LINE_CHARS = 300
MESSAGE_CHARS = 200


def report(percent: float, message: str = "") -> None:
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = {
        "percent": max(0, min(100, round(percent))),
        "message": message[:MESSAGE_CHARS],
        "at": utcformat(now()),
    }
    job.save_meta()


def log(line: str) -> None:
    job = get_current_job()
    if job is None:
        return
    lines = job.meta.setdefault("log", [])
    lines.append({"at": utcformat(now()), "line": line[:LINE_CHARS]})
    del lines[:-LOG_LINES]
    job.save_meta()
