"""Settings for Ceres jobs: every value comes from the environment, read here at the top.

A `.env` file is read only when `DJANGO_READ_DOT_ENV=1` asks for it.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV", default=False):
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set the DJANGO_SECRET_KEY environment variable (required when DEBUG is off).")
    SECRET_KEY = "insecure-local-development-key"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

# --- Redis and queues -------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/5")
REDIS_PREFIX = env.str("REDIS_PREFIX", default="ceres:")
# rq reads RQ_KEY_PREFIX once, when first imported; settings load before any app imports rq, so
# every key rq writes starts with "<REDIS_PREFIX>queue:". The check jobs.E001 catches a late set.
RQ_KEY_PREFIX = f"{REDIS_PREFIX}queue"
os.environ["RQ_KEY_PREFIX"] = RQ_KEY_PREFIX

# Redis Sentinel: with REDIS_SENTINELS set, every process asks the sentinels for the current master
# (and follows a failover); REDIS_URL is then unused. Replication is asynchronous, so a producer
# also waits until REDIS_WAIT_REPLICAS replicas hold the new job before it calls it enqueued.
REDIS_SENTINELS = [tuple(entry.rsplit(":", 1)) for entry in env.list("REDIS_SENTINELS", default=[])]
REDIS_WAIT_REPLICAS = env.int("REDIS_WAIT_REPLICAS", default=1 if REDIS_SENTINELS else 0)
if REDIS_SENTINELS:
    REDIS_CONNECTION = {
        "SENTINELS": [(host, int(port)) for host, port in REDIS_SENTINELS],
        "MASTER_NAME": env.str("REDIS_SENTINEL_MASTER", default="ceres"),
        "DB": env.int("REDIS_DB", default=5),
        "PASSWORD": env.str("REDIS_PASSWORD", default="") or None,
        "SOCKET_TIMEOUT": 5,
        "CONNECTION_KWARGS": {"socket_connect_timeout": 2, "retry_on_timeout": True},
    }
else:
    REDIS_CONNECTION = {"URL": REDIS_URL}

# jobs.config.policies is plain data (no Django, no rq), so deriving RQ_QUEUES from it imports no app code.
from jobs.config.policies import QUEUES  # noqa: E402

RQ_QUEUES = {
    name: {**REDIS_CONNECTION, "DEFAULT_TIMEOUT": policy.timeout, "SERIALIZER": "rq.serializers.JSONSerializer"}
    for name, policy in QUEUES.items()
}
RQ = {
    "WORKER_CLASS": "jobs.runtime.worker.CeresWorker",
    "SCHEDULER_CLASS": "jobs.runtime.scheduler.CeresScheduler",
    # Producers decide when to enqueue (after commit); the queue itself enqueues at once.
    "COMMIT_MODE": "auto",
}
# Modules whose every public function a job may also name (`jobs.config.task_names`): the tests' and the
# benchmarks' own tasks. Production runs the registered tasks only.
JOB_EXTRA_TASK_MODULES = env.list("JOB_EXTRA_TASK_MODULES", default=[])
# django-rq's own dashboard changes state on plain GETs; it stays unrouted.
RQ_SHOW_ADMIN_LINK = False

# The in-process worker (jobs.runtime.slots) starts itself afresh after this many jobs or past this RSS,
# so a slow leak cannot grow.
WORKER_MAX_JOBS = env.int("WORKER_MAX_JOBS", default=50_000)
WORKER_MAX_RSS_MB = env.int("WORKER_MAX_RSS_MB", default=300)

SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
SLACK_TIMEOUT = env.float("SLACK_TIMEOUT", default=10)  # seconds to wait for Slack's answer
DEAD_LETTER_RETENTION_DAYS = env.int("DEAD_LETTER_RETENTION_DAYS", default=90)
QUEUES_UI_PASS = env.str("QUEUES_UI_PASS", default="")
QUEUES_UI_EMAIL = env.str("QUEUES_UI_EMAIL", default="")  # the bootstrap admin's address: test copies go there
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")  # Prometheus sends it as a Bearer token

# --- Accounts ---------------------------------------------------------------------------------
VERIFICATION_TOKEN_TTL_HOURS = env.int("VERIFICATION_TOKEN_TTL_HOURS", default=24)
VERIFICATION_TOKEN_RETENTION_HOURS = env.int("VERIFICATION_TOKEN_RETENTION_HOURS", default=24)
# How long a password reset link works (Django's setting is in seconds).
PASSWORD_RESET_TIMEOUT = 3600 * env.int("PASSWORD_RESET_HOURS", default=2)
# A finished verify job younger than this makes a resend a no-op, so the resend button is no spam cannon.
VERIFY_RESEND_COOLDOWN_SECONDS = env.int("VERIFY_RESEND_COOLDOWN_SECONDS", default=60)
# A requested verification email that Redis does not hold this long after the request is enqueued
# again by the workers' sweep (`ceres_site.accounts.outbox`), for as long as a token would last.
VERIFY_OUTBOX_AFTER_SECONDS = env.int("VERIFY_OUTBOX_AFTER_SECONDS", default=60)
# POSTs allowed per client address (`-ip`) and per account typed (email, token selector, username)
# or signed in (`upload-user`: the profile's uploads) before a 429 (`ceres_site.accounts.limits`).
# django-ratelimit's format: count/period.
RATE_LIMITS = {
    "signup-ip": "20/h", "signup-email": "5/h",
    "resend-ip": "20/h", "resend-email": "5/h",
    "verify-ip": "30/10m", "verify-selector": "10/h",
    "login-ip": "30/15m", "login-username": "10/15m",
    "password_reset-ip": "20/h", "password_reset-email": "5/h",
    "reset_link-ip": "30/10m", "reset_link-uidb64": "10/h",
    "upload-ip": "30/h", "upload-user": "10/h",
}  # fmt: skip
# Proxies whose X-Real-IP names the client (nginx sets it, `ecosystem/nginx.conf`).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"])
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimit": {"BACKEND": "ceres_site.accounts.limits.LimitCache", "KEY_PREFIX": f"{REDIS_PREFIX}ratelimit"},
}
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_IP_META_KEY = "ceres_site.accounts.limits.client_ip"
RATELIMIT_VIEW = "ceres_site.accounts.limits.too_many_requests"
RATELIMIT_FAIL_OPEN = True  # Redis down: count nothing, serve (see `LimitCache`)
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]  # "backend not officially supported": LimitCache is ours

# --- Django -----------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobs",  # before django_rq: its `rqworker` command replaces django-rq's
    "django_rq",
    "django_ratelimit",
    "anymail",
    "ceres_site.municipalities",
    "ceres_site.accounts",
    "ceres_site.newsletters",
]

AUTHENTICATION_BACKENDS = ["ceres_site.accounts.backends.MunicipalityBackend"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # admin's static files from gunicorn, no extra server
    "ceres_site.middleware.UploadSizeLimit",  # before anything reads a body (the CSRF check does)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "ceres_site.municipalities.current.CurrentMunicipality",  # after the language: its 404 is in Spanish
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_ratelimit.middleware.RatelimitMiddleware",  # a limit reached: RATELIMIT_VIEW's 429
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ceres_site.urls"
WSGI_APPLICATION = "ceres_site.wsgi.application"

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

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
# Workers and web keep their connection between jobs and requests (checked before reuse), instead
# of opening one per job: a PostgreSQL connect costs more than a verification email's queries.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Local runs: web and a dozen workers write at once; wait for the lock rather than fail.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Email ------------------------------------------------------------------------------------
# EMAIL_URL like smtp://user:pass@host:587 (smtp+tls://, smtp+ssl://); the console by default.
# EMAIL_BACKEND (e.g. anymail.backends.mailgun.EmailBackend) with ANYMAIL (JSON) selects an ESP.
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default=_email["EMAIL_BACKEND"])
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
ANYMAIL = env.json("ANYMAIL", default={})
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Ceres <no-reply@ceres.localhost>")

# --- Language and time ------------------------------------------------------------------------
LANGUAGE_CODE = "es-ar"
LANGUAGES = [("es-ar", "Español (Argentina)"), ("en", "English")]
# Ours first; then Django's own texts (admin, auth, forms) in voseo, over Django's usted (README, Translations).
LOCALE_PATHS = [BASE_DIR / "locale", BASE_DIR / "locale_django"]
FORMAT_MODULE_PATH = ["ceres_site.formats"]  # es-AR dates as the dashboard writes them
# The one zone of everything shown to people (pages, emails, Slack) and of the crons, whatever the
# server's TZ: Django then sets the process's TZ to it.
from jobs.config.crons import ZONE as TIME_ZONE  # noqa: E402, F401 (plain data: no Django, no rq)

USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"  # filled by `collectstatic` at deploy
WHITENOISE_USE_FINDERS = True  # without collectstatic too (local runs), admin's files are served
LOGIN_URL = "admin:login"

# --- Newsletters and the SMTP rate limit (jobs.mail.throttle) ----------------------------------------
# Sends per minute and per hour the SMTP server accepts from us (0: no limit). Bulk mail gets
# (1 − SMTP_TRANSACTIONAL_SHARE) of it; the rest stays free for verification and welcome emails.
SMTP_RATE_PER_MINUTE = env.float("SMTP_RATE_PER_MINUTE", default=0)
SMTP_RATE_PER_HOUR = env.int("SMTP_RATE_PER_HOUR", default=0)
SMTP_TRANSACTIONAL_SHARE = env.float("SMTP_TRANSACTIONAL_SHARE", default=0.2)

# --- Uploads (the profile page; checked by the files queue) --------------------------------------
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "media/"  # never served as is: a person sees their own files through the profile views
# Local files by default; an S3-compatible bucket with django-storages, by settings only, e.g.
# STORAGE_BACKEND=storages.backends.s3.S3Storage and its AWS_* settings (see README).
STORAGES = {
    "default": {"BACKEND": env.str("STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage")},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CV_MAX_BYTES = 5 * 1024 * 1024
PICTURE_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_BYTES = 16 * 1024 * 1024  # a whole request (nginx.conf says the same); larger ones get a 413 unread
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # bigger files go to a temporary file while uploading

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # urllib3 logs full URLs at DEBUG; the Slack webhook URL is a secret.
    "loggers": {"urllib3": {"level": "WARNING"}},
}
