import django.db.models.deletion
import django.db.models.functions.text
from django.db import migrations, models

import ceres_site.accounts.models


def to_default(apps, schema_editor):
    """Every account so far is the default municipality's: a single-tenant install stays as it was."""
    Municipality = apps.get_model("municipalities", "Municipality")
    User = apps.get_model("accounts", "User")
    User.objects.filter(municipality__isnull=True).update(municipality=Municipality.objects.get(is_default=True))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0008_delivery_kind_password_reset"),
        ("municipalities", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelManagers(name="user", managers=[("objects", ceres_site.accounts.models.UserManager())]),
        migrations.AddField(
            model_name="user",
            name="municipality",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="users",
                to="municipalities.municipality", verbose_name="municipality",
            ),
        ),
        migrations.RunPython(to_default, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="user",
            name="municipality",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="users", to="municipalities.municipality",
                verbose_name="municipality",
            ),
        ),
        migrations.RemoveConstraint(model_name="user", name="accounts_user_email_unique"),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                models.F("municipality"), django.db.models.functions.text.Lower("email"),
                condition=models.Q(("email", ""), _negated=True), name="accounts_user_email_unique",
            ),
        ),
    ]
