from django.apps import AppConfig


class MemoryConfig(AppConfig):
    """What an avatar remembers: the rolling summary of each conversation and the facts it keeps about a user."""

    name = "memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from memory.config import memory_settings_check

        checks.register(memory_settings_check)
