# Summary and Memory, taken over from the conversations app (its 0003 lets go of them) with
# their tables (conversations_summary, conversations_memory), rows, indexes and constraint
# names: the models' state moves, the database does not change. Their content types move
# too, so the permissions granted on them and the admin's history of them follow.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MODELS = ('summary', 'memory')


def content_types_move(from_app, to_app):
    def move(apps, schema_editor):
        ContentType = apps.get_model('contenttypes', 'ContentType')
        content_types = ContentType.objects.using(schema_editor.connection.alias)
        for model in MODELS:
            # A database where the new one exists already (created by a run after the move) keeps it.
            if not content_types.filter(app_label=to_app, model=model).exists():
                content_types.filter(app_label=from_app, model=model).update(app_label=to_app)

    return move


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('avatars', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('conversations', '0003_memory_models_to_memory_app'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Summary',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('text', models.TextField()),
                        ('model', models.CharField(blank=True, max_length=200)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('conversation', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='summary', to='conversations.conversation')),
                        ('covers_until', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='conversations.message')),
                    ],
                    options={
                        'verbose_name_plural': 'summaries',
                        'db_table': 'conversations_summary',
                    },
                ),
                migrations.CreateModel(
                    name='Memory',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('text', models.CharField(max_length=500)),
                        ('key', models.CharField(help_text='What the fact is about, normalised; used to deduplicate.', max_length=200)),
                        ('pinned', models.BooleanField(default=False, help_text='Pinned facts are never rewritten or dropped.')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('avatar', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memories', to='avatars.avatar')),
                        ('source_message', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='conversations.message')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='memories', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'verbose_name_plural': 'memories',
                        'db_table': 'conversations_memory',
                        'ordering': ['-pinned', 'id'],
                        'constraints': [models.UniqueConstraint(fields=('user', 'avatar', 'key'), name='memory_key_unique')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(
            content_types_move('conversations', 'memory'),
            content_types_move('memory', 'conversations'),
        ),
    ]
