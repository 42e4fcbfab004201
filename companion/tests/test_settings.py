"""Settings in each configuration, read in a fresh interpreter exactly as a process would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROBE = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "db": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "broker": settings.CELERY_BROKER_URL,
    "debug": settings.DEBUG,
}))
"""


def settings_under(env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_", "LLM_"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "companion.settings", **env})
    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_DIR, env=clean, capture_output=True, text=True, check=True
    )
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def test_with_nothing_set_everything_is_embedded() -> None:
    settings = settings_under({})

    assert settings["db"] == "django.db.backends.sqlite3"
    assert str(settings["db_name"]).endswith("db.sqlite3")
    assert settings["layer"] == "core.layers.InMemoryChannelLayer"
    assert settings["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert settings["eager"] is True
    assert settings["debug"] is True


def test_database_and_redis_urls_switch_to_postgresql_and_redis() -> None:
    settings = settings_under(
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/companion", "REDIS_URL": "redis://127.0.0.1:6379/3"}
    )

    assert settings["db"] == "django.db.backends.postgresql"
    assert settings["db_name"] == "companion"
    assert settings["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert settings["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert settings["eager"] is False
    assert settings["broker"] == "redis://127.0.0.1:6379/3"


def test_production_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        settings_under({"DJANGO_DEBUG": "false"})

    assert "DJANGO_SECRET_KEY must be set" in failure.value.stderr


def test_production_settings_pass_the_deploy_check_without_warnings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "companion.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
            "DJANGO_ALLOWED_HOSTS": "companion.example.com",
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
