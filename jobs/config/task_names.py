"""The functions a job may name, and the callbacks it may carry: workers run these and nothing else.

A job that names any other function (`os.system`, or one of ours reached through another module's
attribute) fails without running and without a retry, and is archived and alerted like any final
failure; a callback that is not ours is skipped (`jobs.runtime.job.CeresJob`). The producers name their
tasks from here. `JOB_EXTRA_TASK_MODULES` (settings) adds modules whose every public function may
run: the tests' and the benchmarks' own tasks, never production's.
"""

from django.conf import settings

SEND_VERIFY_EMAIL = "jobs.tasks.email.send_verify_email"
SEND_WELCOME_EMAIL = "jobs.tasks.email.send_welcome_email"
SEND_ACCOUNT_EXISTS_EMAIL = "jobs.tasks.email.send_account_exists_email"
RESEND_VERIFY_EMAIL = "jobs.tasks.email.resend_verify_email"
SEND_CV_REJECTED_EMAIL = "jobs.tasks.email.send_cv_rejected_email"
REQUEST_PASSWORD_RESET = "jobs.tasks.email.request_password_reset"
SEND_PASSWORD_RESET_EMAIL = "jobs.tasks.email.send_password_reset_email"
SEND_NEWSLETTER = "jobs.tasks.newsletters.send_newsletter"
POST_TO_SLACK = "jobs.tasks.slack.post_to_slack"
FLUSH_ALERTS = "jobs.failures.final.flush_alerts"
RUN_CRON = "jobs.tasks.maintenance.run_cron"
VALIDATE_CV = "jobs.tasks.files.validate_cv"
OPTIMIZE_PROFILE_PICTURE = "jobs.tasks.files.optimize_profile_picture"
TASKS = frozenset({
    SEND_VERIFY_EMAIL, SEND_WELCOME_EMAIL, SEND_ACCOUNT_EXISTS_EMAIL, RESEND_VERIFY_EMAIL, SEND_CV_REJECTED_EMAIL,
    REQUEST_PASSWORD_RESET, SEND_PASSWORD_RESET_EMAIL,
    SEND_NEWSLETTER,
    POST_TO_SLACK, FLUSH_ALERTS, RUN_CRON, VALIDATE_CV, OPTIMIZE_PROFILE_PICTURE,
})  # fmt: skip

# What a task does once its job has failed for good, called by `jobs.failures.final.archive` with the job's kwargs.
UPLOAD_FAILED = "jobs.tasks.files.upload_failed"
ON_FINAL_FAILURE = {VALIDATE_CV: UPLOAD_FAILED, OPTIMIZE_PROFILE_PICTURE: UPLOAD_FAILED}

ON_JOB_FAILURE = "jobs.failures.attempts.on_job_failure"
CALLBACKS = frozenset({ON_JOB_FAILURE})

# Names that jobs already in Redis (and dead letters) may still carry, from before the layers moved.
RENAMED = {
    "jobs.alerts.flush_alerts": FLUSH_ALERTS,
    "jobs.failures.on_job_failure": ON_JOB_FAILURE,
}


def current(name: str | None) -> str | None:
    return RENAMED.get(name, name) if name is not None else None


def allowed(name: str | None, registered: frozenset[str]) -> bool:
    name = current(name)
    if name in registered:
        return True
    module, _, function = (name or "").rpartition(".")
    return module in settings.JOB_EXTRA_TASK_MODULES and function.isidentifier() and not function.startswith("_")
