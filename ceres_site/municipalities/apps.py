from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save
from django.utils.translation import gettext_lazy as _


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


def _recount(**kwargs) -> None:
    from jobs.config import tenancy

    tenancy.forget()


def _ensure_default(sender, using: str = "default", **kwargs) -> None:
    from jobs.config import tenancy

    from .models import ensure_default

    ensure_default(using)
    tenancy.forget()  # a flush deleted every municipality without a signal
