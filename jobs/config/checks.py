"""System checks for the queue configuration (run by every manage.py command and at start)."""

from django.conf import settings
from django.core import checks


@checks.register()
def rq_key_prefix(app_configs, **kwargs):
    from jobs.rq_compat import KEY_PREFIX

    return _error_if(
        KEY_PREFIX != settings.RQ_KEY_PREFIX,
        f"rq was imported with RQ_KEY_PREFIX={KEY_PREFIX!r}, expected {settings.RQ_KEY_PREFIX!r}.",
        hint="Something imported rq before the settings were loaded; import it after django.setup().",
        id="jobs.E001",
    )


@checks.register()
def rq_versions_checked(app_configs, installed: dict[str, str] | None = None, **kwargs):
    """`installed`: package -> version, the installed ones unless given (tests give others)."""
    from jobs.rq_compat import versions_differing

    return [
        checks.Error(
            f"{name} {version} is installed; jobs/rq_compat.py was checked against {name} {checked}.",
            hint=f"Read jobs/rq_compat.py (and the classes it names) again against {name} {version}, "
            "then update its CHECKED.",
            id="jobs.E010",
        )
        for name, (checked, version) in versions_differing(installed).items()
    ]


@checks.register()
def queues_match_policy(app_configs, **kwargs):
    from jobs.config.policies import QUEUES

    return _error_if(
        set(settings.RQ_QUEUES) != set(QUEUES),
        f"RQ_QUEUES lists {sorted(settings.RQ_QUEUES)}, jobs.config.policies declares {sorted(QUEUES)}.",
        hint="Derive RQ_QUEUES from jobs.config.policies.QUEUES.",
        id="jobs.E002",
    )


@checks.register()
def slack_webhook(app_configs, **kwargs):
    if not settings.SLACK_WEBHOOK_URL:
        return [
            checks.Warning(
                "SLACK_WEBHOOK_URL is not set: final failures are archived and logged, but no one is alerted.",
                id="jobs.W001",
            )
        ]
    return []


def _error_if(failed: bool, message: str, *, hint: str, id: str) -> list[checks.CheckMessage]:
    return [checks.Error(message, hint=hint, id=id)] if failed else []
