# Summary and Memory move to the memory app (memory/migrations/0001_initial.py takes them
# over). State only: their tables, rows, indexes and constraints stay as they are.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0002_summary_covers_until_cascade'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Memory'),
                migrations.DeleteModel(name='Summary'),
            ],
            database_operations=[],
        ),
    ]
