import django.db.models.deletion
from django.db import migrations, models


def to_default(apps, schema_editor):
    """Every newsletter so far is the default municipality's."""
    Municipality = apps.get_model("municipalities", "Municipality")
    Newsletter = apps.get_model("newsletters", "Newsletter")
    Newsletter.objects.filter(municipality__isnull=True).update(municipality=Municipality.objects.get(is_default=True))


class Migration(migrations.Migration):
    dependencies = [
        ("newsletters", "0001_initial"),
        ("municipalities", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="newsletter",
            name="municipality",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="newsletters",
                to="municipalities.municipality", verbose_name="municipality",
            ),
        ),
        migrations.RunPython(to_default, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="newsletter",
            name="municipality",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="newsletters",
                to="municipalities.municipality", verbose_name="municipality",
            ),
        ),
    ]
