"""Settings, read from the environment (see `.env.example` and the README).

With nothing set, Companion runs on embedded defaults: a SQLite file, the in-memory
channel layer, Celery tasks run in-process and the local-memory cache. `DATABASE_URL`
switches to PostgreSQL, `REDIS_URL` to Redis for the channel layer, Celery and the cache.
"""

import os
import tempfile
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from companion.beat import BEAT_SCHEDULE

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DJANGO_DEBUG", default=True)

_DEV_SECRET_KEY = "django-insecure-development-only-key-change-me-in-production-0123456789"
SECRET_KEY: str = env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false.")

ALLOWED_HOSTS: list[str] = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "accounts",
    "avatars",
    "conversations",
    "memory",
    "safety",
    "secretary",
    "images",
    "recall",
    "llm",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "companion.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "companion.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=True):
    # A connection per unit of work costs a TCP handshake and authentication on every turn
    # step; under ASGI Django recommends a pool over persistent connections.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=20),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the ASGI server's threads and in-process tasks share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # Tests use a file too, not Django's shared-cache memory database: there a table lock
    # taken by an in-process task's thread fails the request's query at once ("database
    # table is locked") instead of waiting, as the file's busy timeout makes it do.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"companion-test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Generated pictures: served only by images.api (to who may see them), never from MEDIA_URL.
    "images": {
        "BACKEND": env.str("IMAGE_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"),
        "OPTIONS": {"location": str(Path(str(MEDIA_ROOT)) / "images"), "base_url": None}
        if env.str("IMAGE_STORAGE_BACKEND", default="").strip() in ("", "django.core.files.storage.FileSystemStorage")
        else env.json("IMAGE_STORAGE_OPTIONS", default={}),
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Uploads: a character card PNG is the largest thing a client sends.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Redis: channel layer, Celery broker and cache, or their embedded stand-ins -----------
REDIS_URL: str = env.str("REDIS_URL", default="")

if REDIS_URL:
    # The pub/sub layer: the core layer shares a 100-message queue per process and drops the
    # overflow silently under load, and its 5 s blocking reads trip redis-py's socket timeout
    # on a quiet process (docs/performance.md measures both).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL}],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="companion"),
            },
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Channels' in-memory layer, without its sweep of every channel on every message (core/layers.py).
    CHANNEL_LAYERS = {"default": {"BACKEND": "core.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task of a worker that died is redelivered after this long; it must stay above the longest
# retry countdown (300 s) plus the hard time limit, or a waiting retry would run twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 900}
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = BEAT_SCHEDULE

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Accounts and API limits --------------------------------------------------------------
ACCESS_TOKEN_TTL_SECONDS: int = env.int("ACCESS_TOKEN_TTL_SECONDS", default=15 * 60)
REFRESH_TOKEN_TTL_SECONDS: int = env.int("REFRESH_TOKEN_TTL_SECONDS", default=30 * 24 * 3600)
LOGIN_THROTTLE_PER_USERNAME: int = env.int("LOGIN_THROTTLE_PER_USERNAME", default=5)
LOGIN_THROTTLE_PER_IP: int = env.int("LOGIN_THROTTLE_PER_IP", default=20)
LOGIN_THROTTLE_WINDOW_SECONDS: int = env.int("LOGIN_THROTTLE_WINDOW_SECONDS", default=15 * 60)
REGISTER_THROTTLE_PER_IP: int = env.int("REGISTER_THROTTLE_PER_IP", default=10)
CARD_MAX_BYTES: int = env.int("CARD_MAX_BYTES", default=2 * 1024 * 1024)

# --- LLM ------------------------------------------------------------------------------------
LLM_PROVIDER: str = env.str("LLM_PROVIDER", default="openai")
LLM_BASE_URL: str = env.str("LLM_BASE_URL", default="")
LLM_API_KEY: str = env.str("LLM_API_KEY", default="") or env.str("OPENAI_API_KEY", default="")
LLM_MODEL: str = env.str("LLM_MODEL", default="gpt-4o-mini")
LLM_SUMMARY_MODEL: str = env.str("LLM_SUMMARY_MODEL", default="") or LLM_MODEL
# Automatic conversation titles after the first exchange (conversations/titles.py): one short
# call to LLM_SUMMARY_MODEL per conversation, or its first words without a model.
CONVERSATION_TITLES_AUTO: bool = env.bool("CONVERSATION_TITLES_AUTO", default=True)
LLM_TEMPERATURE: float = env.float("LLM_TEMPERATURE", default=0.8)
LLM_MAX_TOKENS: int = env.int("LLM_MAX_TOKENS", default=800)
LLM_MAX_TOKENS_LIMIT: int = env.int("LLM_MAX_TOKENS_LIMIT", default=4096)
LLM_CONNECT_TIMEOUT: float = env.float("LLM_CONNECT_TIMEOUT", default=5.0)
LLM_FIRST_TOKEN_TIMEOUT: float = env.float("LLM_FIRST_TOKEN_TIMEOUT", default=30.0)
LLM_READ_TIMEOUT: float = env.float("LLM_READ_TIMEOUT", default=20.0)
LLM_MAX_RETRIES: int = env.int("LLM_MAX_RETRIES", default=2)
LLM_BREAKER_FAILURES: int = env.int("LLM_BREAKER_FAILURES", default=5)
LLM_BREAKER_RESET_SECONDS: float = env.float("LLM_BREAKER_RESET_SECONDS", default=30.0)
LLM_COMPLETE_TIMEOUT: float = env.float("LLM_COMPLETE_TIMEOUT", default=120.0)
LLM_STREAM_USAGE: bool = env.bool("LLM_STREAM_USAGE", default=True)
LLM_MAX_TOKENS_PARAM: str = env.str("LLM_MAX_TOKENS_PARAM", default="max_tokens")
LLM_RETRY_BASE_SECONDS: float = env.float("LLM_RETRY_BASE_SECONDS", default=0.5)
LLM_RETRY_MAX_SECONDS: float = env.float("LLM_RETRY_MAX_SECONDS", default=8.0)
LLM_RETRY_AFTER_MAX_SECONDS: float = env.float("LLM_RETRY_AFTER_MAX_SECONDS", default=20.0)
# After a stream broke mid-reply, resend it (same seed) and carry on past the text shown when
# the replay repeats it. Off for a server that rejects the `seed` parameter.
LLM_RESUME_STREAMS: bool = env.bool("LLM_RESUME_STREAMS", default=True)
# The models clients may pick, with prices (JSON, llm/catalog.py; checked by `manage.py check`).
# Empty: the one LLM_MODEL, unpriced.
LLM_MODELS: str = env.str("LLM_MODELS", default="")

# --- Images: portraits and in-chat pictures (docs/images.md) ---------------------------------
# "fake" draws a picture locally (no network); "openai" calls any OpenAI-compatible
# /images/generations; or a dotted path to a class implementing images.base.ImageProvider.
IMAGE_PROVIDER: str = env.str("IMAGE_PROVIDER", default="") or ("openai" if LLM_API_KEY or LLM_BASE_URL else "fake")
IMAGE_MODEL: str = env.str("IMAGE_MODEL", default="gpt-image-1")
IMAGE_BASE_URL: str = env.str("IMAGE_BASE_URL", default="") or LLM_BASE_URL
IMAGE_API_KEY: str = env.str("IMAGE_API_KEY", default="") or LLM_API_KEY
IMAGE_SIZE: str = env.str("IMAGE_SIZE", default="1024x1024")
IMAGE_QUALITY: str = env.str("IMAGE_QUALITY", default="medium")
# "" sends none (gpt-image-1 always answers base64); "url" or "b64_json" for DALL-E and servers that take it.
IMAGE_RESPONSE_FORMAT: str = env.str("IMAGE_RESPONSE_FORMAT", default="")
IMAGE_TIMEOUT: float = env.float("IMAGE_TIMEOUT", default=60.0)
IMAGE_DOWNLOAD_TIMEOUT: float = env.float("IMAGE_DOWNLOAD_TIMEOUT", default=15.0)
IMAGE_DOWNLOAD_MAX_BYTES: int = env.int("IMAGE_DOWNLOAD_MAX_BYTES", default=20 * 1024 * 1024)
IMAGE_MAX_DIMENSION: int = env.int("IMAGE_MAX_DIMENSION", default=1024)
IMAGE_STORED_MAX_BYTES: int = env.int("IMAGE_STORED_MAX_BYTES", default=2 * 1024 * 1024)
IMAGE_RETRY_SECONDS: float = env.float("IMAGE_RETRY_SECONDS", default=2.0)
# Prices per image (JSON): [{"model": "gpt-image-1", "size": "1024x1024", "quality": "medium", "usd": "0.042"}];
# "size"/"quality" may be "*". Unset: the built-in table of images/pricing.py.
IMAGE_PRICES: str = env.str("IMAGE_PRICES", default="")
# The storage (a STORAGES alias) the pictures are kept in; images are never served from MEDIA_URL.
IMAGE_STORAGE: str = env.str("IMAGE_STORAGE", default="images")

# --- Quotas: per user and day in the user's own zone; empty = unlimited (docs/operations.md) --
QUOTA_DAILY_TOKENS: int | None = env.int("QUOTA_DAILY_TOKENS", default=None)
QUOTA_DAILY_USD: str | None = env.str("QUOTA_DAILY_USD", default=None)  # a decimal text: never a float
QUOTA_DAILY_IMAGES: int | None = env.int("QUOTA_DAILY_IMAGES", default=None)
# How long an admitted turn's reservation holds if its process dies (default: TURN_LOCK_SECONDS + 300).
QUOTA_RESERVATION_SECONDS: int | None = env.int("QUOTA_RESERVATION_SECONDS", default=None)

# --- Operator alerts: mail to ADMINS once per provider incident -------------------------------
ADMINS: list[tuple[str, str]] = [(address, address) for address in env.list("DJANGO_ADMINS", default=[])]
SERVER_EMAIL: str = env.str("SERVER_EMAIL", default="companion@localhost")
EMAIL_BACKEND: str = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST: str = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT: int = env.int("EMAIL_PORT", default=25)
EMAIL_TIMEOUT: float = env.float("EMAIL_TIMEOUT", default=10.0)
# An incident already mailed is mailed again only after this long, if it is still going on.
LLM_ALERT_REPEAT_SECONDS: int = env.int("LLM_ALERT_REPEAT_SECONDS", default=6 * 3600)

# --- Logging: structured JSON lines; never message text or keys at INFO ---------------------
LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "filters": {"query_redacted": {"()": "core.logging.QueryRedacted"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "companion": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # Every query with its parameters (message text, token hashes): never, whatever LOG_LEVEL says.
        "django.db.backends": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # redis-py logs every RESP3 push at DEBUG, channel-layer payloads (message text) included: never either.
        "push_response": {"level": "WARNING"},
        # uvicorn logs each websocket handshake with its query string, the one-time ticket in it,
        # and each HTTP request with its query string, a search's words in it. Only a filter here:
        # uvicorn's own handlers and levels stay (these loggers have no handler of their own).
        "uvicorn.error": {"filters": ["query_redacted"]},
        "uvicorn.access": {"filters": ["query_redacted"]},
    },
}

# --- Conversations --------------------------------------------------------------------------
CONTEXT_MAX_PAIRS: int = env.int("CONTEXT_MAX_PAIRS", default=10)
CONTEXT_MAX_TOKENS: int = env.int("CONTEXT_MAX_TOKENS", default=4000)
# Tokens of the prompt's recalled section (older messages and facts found for the new message); 0 turns recall off.
RECALL_TOKEN_BUDGET: int = env.int("RECALL_TOKEN_BUDGET", default=600)
# Index each stored turn for recall in the background (off: only `recall_index_conversation` writes documents).
RECALL_INDEX_AUTO: bool = env.bool("RECALL_INDEX_AUTO", default=True)
MESSAGE_RATE_PER_MINUTE: int = env.int("MESSAGE_RATE_PER_MINUTE", default=30)
TURN_LOCK_SECONDS: int = env.int("TURN_LOCK_SECONDS", default=300)
REPLIES_CONCURRENT_PER_USER: int = env.int("REPLIES_CONCURRENT_PER_USER", default=3)
WS_IDLE_TIMEOUT_SECONDS: int = env.int("WS_IDLE_TIMEOUT_SECONDS", default=300)
LLM_ALLOWED_MODELS: list[str] = env.list("LLM_ALLOWED_MODELS", default=[])
# Mode router thresholds (0-100 scores); docs/intents.md explains each.
ROUTER_POINT_THRESHOLD: float = env.float("ROUTER_POINT_THRESHOLD", default=70.0)
ROUTER_NEUTRAL_MARGIN: float = env.float("ROUTER_NEUTRAL_MARGIN", default=5.0)
ROUTER_SWITCH_THRESHOLD: float = env.float("ROUTER_SWITCH_THRESHOLD", default=80.0)
ROUTER_SWITCH_MARGIN: float = env.float("ROUTER_SWITCH_MARGIN", default=10.0)
ROUTER_MIN_CHARS: int = env.int("ROUTER_MIN_CHARS", default=4)
ROUTER_COMMAND_THRESHOLD: float = env.float("ROUTER_COMMAND_THRESHOLD", default=90.0)

# Duty of care (docs/safety.md): the AI notice is shown at the start of a conversation and
# again after this many hours of continued use (SB 243 asks for at least every three).
SAFETY_AI_NOTICE_HOURS: float = env.float("SAFETY_AI_NOTICE_HOURS", default=3.0)
# Memory: with KEEP_RECENT + TRIGGER <= 2 * CONTEXT_MAX_PAIRS, every message is either in the
# prompt's history or in the summary: nothing falls in between.
SUMMARY_KEEP_RECENT: int = env.int("SUMMARY_KEEP_RECENT", default=12)
SUMMARY_TRIGGER_MESSAGES: int = env.int("SUMMARY_TRIGGER_MESSAGES", default=8)
SUMMARY_MAX_TOKENS: int = env.int("SUMMARY_MAX_TOKENS", default=600)
MEMORY_MAX_FACTS: int = env.int("MEMORY_MAX_FACTS", default=200)

# --- Secretary: reminders, check-ins, push (docs/operations.md, "Scheduled messages") ------
# Without REDIS_URL the ASGI server runs the scheduler itself (secretary/ticker.py); with it, beat and a worker do.
SCHEDULER_IN_PROCESS: bool = env.bool("SCHEDULER_IN_PROCESS", default=not REDIS_URL)
SCHEDULER_TICK_SECONDS: float = env.float("SCHEDULER_TICK_SECONDS", default=1.0)
PROACTIVE_SWEEP_SECONDS: float = env.float("PROACTIVE_SWEEP_SECONDS", default=60.0)
REMINDER_CLAIM_LEASE_SECONDS: float = env.float("REMINDER_CLAIM_LEASE_SECONDS", default=60.0)
REMINDER_ATTEMPTS_MAX: int = env.int("REMINDER_ATTEMPTS_MAX", default=5)
REMINDER_DELIVERY_BATCH: int = env.int("REMINDER_DELIVERY_BATCH", default=100)
SCHEDULED_CONCURRENCY: int = env.int("SCHEDULED_CONCURRENCY", default=8)
SCHEDULED_MODEL_TIMEOUT: float = env.float("SCHEDULED_MODEL_TIMEOUT", default=5.0)
# Push for messages the user did not ask for: a dotted path to a callable (core/push.py).
PUSH_BACKEND: str = env.str("PUSH_BACKEND", default="core.push.push_nothing")
PUSH_WEBHOOK_URL: str = env.str("PUSH_WEBHOOK_URL", default="")
PUSH_WEBHOOK_SECRET: str = env.str("PUSH_WEBHOOK_SECRET", default="")
PUSH_WEBHOOK_TIMEOUT: float = env.float("PUSH_WEBHOOK_TIMEOUT", default=3.0)
