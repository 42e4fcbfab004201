from django.apps import AppConfig


class SafetyConfig(AppConfig):
    """Duty of care: the crisis detector, crisis resources per locale, AI notices, and the operator's daily counts."""

    name = "safety"
    default_auto_field = "django.db.models.BigAutoField"
