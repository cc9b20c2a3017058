from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = _("Queues and jobs")

    def ready(self):
        from jobs.config import checks  # noqa: F401 (registers the system checks)
        from jobs.mail import smtp, throttle
        from jobs.runtime import hooks

        hooks.register(hooks.SLOT_IDLE, smtp.close_idle)
        hooks.register(hooks.SLOT_END, smtp.close)
        hooks.register(hooks.BEFORE_THROTTLED_JOB, throttle.wait_for_turn)
        hooks.register(hooks.PACE, throttle.promote)
        hooks.register(hooks.HAD_TURN, throttle.had_turn)
