"""Seed the crisis lines operators start from; they edit them in the admin afterwards."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

RESOURCES = [
    # locale, name, phone, text, url, position
    ("US", "988 Suicide & Crisis Lifeline", "988", "Text 988", "https://988lifeline.org", 0),
    ("GB", "Samaritans", "116 123", "", "https://www.samaritans.org", 0),
    ("IE", "Samaritans", "116 123", "", "https://www.samaritans.org", 0),
    ("FR", "3114 Numéro national de prévention du suicide", "3114", "", "https://3114.fr", 0),
    ("DE", "TelefonSeelsorge", "0800 111 0 111", "", "https://www.telefonseelsorge.de", 0),
]


def resources_seed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    CrisisResource = apps.get_model("safety", "CrisisResource")
    for locale, name, phone, text, url, position in RESOURCES:
        CrisisResource.objects.get_or_create(
            locale=locale, name=name, defaults={"phone": phone, "text": text, "url": url, "position": position}
        )


def resources_unseed(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    CrisisResource = apps.get_model("safety", "CrisisResource")
    for locale, name, *_ in RESOURCES:
        CrisisResource.objects.filter(locale=locale, name=name).delete()


class Migration(migrations.Migration):
    dependencies = [("safety", "0001_initial")]

    operations = [migrations.RunPython(resources_seed, resources_unseed)]
