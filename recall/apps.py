from django.apps import AppConfig


class RecallConfig(AppConfig):
    """Long-term recall: the earlier messages and remembered facts that bear on a new message."""

    name = "recall"
    default_auto_field = "django.db.models.BigAutoField"
