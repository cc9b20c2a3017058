import logging

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save
from django.utils.translation import gettext_lazy as _

log = logging.getLogger(__name__)


class MunicipalitiesConfig(AppConfig):
    name = "ceres_site.municipalities"
    label = "municipalities"
    verbose_name = _("Municipalities")

    def ready(self) -> None:
        from jobs.config import tenancy

        from .models import Municipality, slugs, staff_scope, webhook_for

        post_migrate.connect(_ensure_default, sender=self)
        tenancy.register(webhook_for=webhook_for, names=slugs, scope_of=staff_scope)
        for signal in (post_save, post_delete):  # whether several share the installation, counted again
            signal.connect(_recount, sender=Municipality)
        post_save.connect(_publish_limits, sender=Municipality)


def _recount(**kwargs) -> None:
    from jobs.config import tenancy

    tenancy.forget()


def _publish_limits(instance, **kwargs) -> None:
    """A change of its server's limits applies to a campaign under way: at its next turn. Redis away:
    the next campaign's start gives them (the save itself must not fail for it)."""
    from jobs.enqueue import clients

    try:
        instance.publish_smtp_limits()
    except clients.UNREACHABLE:
        log.warning("municipality %s: its SMTP limits reach the workers at its next campaign (Redis away)", instance.pk)


def _ensure_default(sender, using: str = "default", **kwargs) -> None:
    from jobs.config import tenancy

    from .models import ensure_default

    ensure_default(using)
    tenancy.forget()  # a flush deleted every municipality without a signal
