from django.apps import AppConfig


class LlmConfig(AppConfig):
    name = "llm"
    label = "llm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from llm.catalog import llm_models_check

        checks.register(llm_models_check)
