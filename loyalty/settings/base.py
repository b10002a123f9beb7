"""Settings, complete and driven by the environment (twelve-factor).

No ``DATABASE_URL`` means the SQLite demo database; no ``CELERY_BROKER_URL`` means background jobs
run inline; no ``REDIS_URL`` means a per-process memory cache. Outside DEBUG a missing
``SECRET_KEY`` or ``ALLOWED_HOSTS`` stops start-up.
"""

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# ENV_FILE names another file (or a missing one, for none at all) than the checkout's .env.
ENV_FILE = Path(os.environ.get("ENV_FILE", BASE_DIR / ".env"))
environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

_DEMO_SECRET = "demo-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=_DEMO_SECRET if DEBUG else "")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
if not DEBUG and not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "django_celery_beat",
    "core",
    "members",
    "tiers",
    "rewards",
    "bulk",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "loyalty.urls"
WSGI_APPLICATION = "loyalty.wsgi.application"

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

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("SQLITE_PATH", default=str(BASE_DIR / "db.sqlite3")),
            # IMMEDIATE transactions serialise writers up front, so concurrent demo requests wait
            # for the write lock instead of failing with "database is locked" half-way.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
if IS_POSTGRES:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Every lock wait is bounded for the whole session; a timeout maps to 409/503 (STYLE §3.5).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "options", f"-c lock_timeout={env.int('LOYALTY_LOCK_TIMEOUT_MS', default=5000)}"
    )
    # Parameters travel apart from the SQL: batch inserts of thousands of values skip
    # psycopg's client-side quoting and parsing (a large share of ingestion time).
    DATABASES["default"]["OPTIONS"].setdefault(
        "server_side_binding", env.bool("DB_SERVER_SIDE_BINDING", default=True)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttling, short-lived state) ----------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="loyalty"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalisation and time ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (admin, Swagger UI, Redoc, Chart.js: all served locally) -------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Django REST framework --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.api.authentication.LoyaltyJWTAuthentication",
        "core.api.authentication.PartnerKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.api.permissions.RolePermission"],
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttles.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "operator": env.str("LOYALTY_THROTTLE_OPERATOR", default="6000/min"),
        "partner": env.str("LOYALTY_THROTTLE_PARTNER", default="6000/min"),
        "member": env.str("LOYALTY_THROTTLE_MEMBER", default="600/min"),
        "anonymous": env.str("LOYALTY_THROTTLE_ANONYMOUS", default="120/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["core.api.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["core.api.filters.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.CreatedCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exceptions.problem_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "UPDATE_LAST_LOGIN": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Loyalty API",
    "DESCRIPTION": (
        "Member tiering and loyalty: members, identities and tags; points ledger; activity and "
        "lifecycle; tiers and the capability - benefit - honor ladder. Errors are RFC 9457 "
        "application/problem+json. Every effectful POST accepts an Idempotency-Key header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]",
    "ENUM_NAME_OVERRIDES": {
        "PointsReasonEnum": "rewards.models.Reason",
        "AwardReasonEnum": "rewards.api.serializers.AWARD_REASONS",
        "DeductionReasonEnum": "rewards.api.serializers.DEDUCTION_REASONS",
        "ReversalReasonEnum": "rewards.api.serializers.REVERSAL_REASONS",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.add_problem_responses",
    ],
}

# --- CORS (browser front ends; mini-programs call server-side allow-listed domains) ----------
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-api-key",
)
CORS_EXPOSE_HEADERS = ("idempotent-replayed", "retry-after")

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Must exceed the longest task and the longest retry countdown, or Redis redelivers unacked tasks.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * 60 * 60}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- Logging -----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Security outside DEBUG --------------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]

# --- Business settings (LOYALTY_...) -----------------------------------------------------------
LOYALTY_BUSINESS_TIME_ZONE = env.str("LOYALTY_BUSINESS_TIME_ZONE", default="Asia/Shanghai")
LOYALTY_PAGE_SIZE = env.int("LOYALTY_PAGE_SIZE", default=50)
LOYALTY_MAX_PAGE_SIZE = env.int("LOYALTY_MAX_PAGE_SIZE", default=200)
LOYALTY_MAX_BATCH_ITEMS = env.int("LOYALTY_MAX_BATCH_ITEMS", default=1000)
LOYALTY_MAX_TAGS_PER_NAMESPACE = env.int("LOYALTY_MAX_TAGS_PER_NAMESPACE", default=100)
LOYALTY_IDEMPOTENCY_RETENTION_HOURS = env.int("LOYALTY_IDEMPOTENCY_RETENTION_HOURS", default=24)
LOYALTY_LOCK_TIMEOUT_MS = env.int("LOYALTY_LOCK_TIMEOUT_MS", default=5000)
LOYALTY_BROKER_HEALTH_TIMEOUT_SECONDS = env.float(
    "LOYALTY_BROKER_HEALTH_TIMEOUT_SECONDS", default=2.0
)
LOYALTY_PROBLEM_TYPE_BASE = env.str("LOYALTY_PROBLEM_TYPE_BASE", default="urn:loyalty:problem:")
LOYALTY_POINTS_EXPIRY_DAYS = env.int("LOYALTY_POINTS_EXPIRY_DAYS", default=365)
LOYALTY_PURCHASE_PENDING_DAYS = env.int("LOYALTY_PURCHASE_PENDING_DAYS", default=14)
LOYALTY_POINTS_EXPIRING_WARNING_DAYS = env.int("LOYALTY_POINTS_EXPIRING_WARNING_DAYS", default=30)
LOYALTY_POINTS_MAX_AWARD = env.int("LOYALTY_POINTS_MAX_AWARD", default=10_000_000)
LOYALTY_JOB_CHUNK_SIZE = env.int("LOYALTY_JOB_CHUNK_SIZE", default=1000)
# Rows per system account (issuance, redemption, ...), at least 1: concurrent postings for
# different members spread over them instead of queueing on one row. Changing it is safe (an
# account's balance is the sum of its rows).
LOYALTY_SYSTEM_ACCOUNT_SHARDS = env.int("LOYALTY_SYSTEM_ACCOUNT_SHARDS", default=16)

# --- Webhooks (LOYALTY_WEBHOOK_...) ---------------------------------------------------------------
# Targets: https only and public addresses only, unless these allow more (tests and the demo run
# receivers on loopback over plain http).
LOYALTY_WEBHOOK_ALLOW_HTTP = env.bool("LOYALTY_WEBHOOK_ALLOW_HTTP", default=DEBUG)
LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool(
    "LOYALTY_WEBHOOK_ALLOW_PRIVATE_TARGETS", default=False
)
LOYALTY_WEBHOOK_CONNECT_TIMEOUT_SECONDS = env.float(
    "LOYALTY_WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=3.0
)
LOYALTY_WEBHOOK_READ_TIMEOUT_SECONDS = env.float(
    "LOYALTY_WEBHOOK_READ_TIMEOUT_SECONDS", default=10.0
)
# Deliveries in a row that give up after the whole retry schedule (> 24 h each) before the
# subscription is disabled; a 410 Gone disables it at once.
LOYALTY_WEBHOOK_DISABLE_AFTER_FAILURES = env.int(
    "LOYALTY_WEBHOOK_DISABLE_AFTER_FAILURES", default=5
)
LOYALTY_WEBHOOK_MAX_SUBSCRIPTIONS_PER_PARTNER = env.int(
    "LOYALTY_WEBHOOK_MAX_SUBSCRIPTIONS_PER_PARTNER", default=20
)
LOYALTY_WEBHOOK_SECRET_ROTATION_GRACE_HOURS = env.int(
    "LOYALTY_WEBHOOK_SECRET_ROTATION_GRACE_HOURS", default=24
)
# Leases: an attempt in flight holds its delivery for ATTEMPT_LEASE (longer than the delivery
# task's time limit); a queued task message holds it for QUEUE_LEASE. When a lease runs out (the
# worker died, the message was lost) the dispatcher enqueues the delivery again.
LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS = env.int(
    "LOYALTY_WEBHOOK_ATTEMPT_LEASE_SECONDS", default=120
)
LOYALTY_WEBHOOK_QUEUE_LEASE_SECONDS = env.int("LOYALTY_WEBHOOK_QUEUE_LEASE_SECONDS", default=900)
# Retries due within this are enqueued with a countdown; later ones are left to the dispatcher.
# Redis keeps a countdown task unacknowledged until it runs and redelivers it after the
# visibility timeout, so the cap must stay below CELERY_BROKER_TRANSPORT_OPTIONS'
# visibility_timeout (2 h). Raising the visibility timeout instead would delay recovering tasks
# of a killed worker; the retry schedule itself lives in the database (next_attempt_at).
LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS = env.int(
    "LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS", default=3600
)
LOYALTY_WEBHOOK_DISPATCH_BATCH_SIZE = env.int("LOYALTY_WEBHOOK_DISPATCH_BATCH_SIZE", default=500)
LOYALTY_WEBHOOK_DISPATCH_MAX_PER_RUN = env.int(
    "LOYALTY_WEBHOOK_DISPATCH_MAX_PER_RUN", default=10_000
)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["WebhookDeliveryStatusEnum"] = (
    "core.models.DeliveryStatus"
)
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS:
    raise ImproperlyConfigured(
        "LOYALTY_WEBHOOK_MAX_COUNTDOWN_SECONDS must be below the broker's visibility_timeout."
    )

# --- Activity, lifecycle and scenario triggers -------------------------------------------------
# Events older than this (or more than LOYALTY_EVENT_MAX_FUTURE_SECONDS ahead) are rejected.
LOYALTY_EVENT_MAX_AGE_DAYS = env.int("LOYALTY_EVENT_MAX_AGE_DAYS", default=30)
LOYALTY_EVENT_MAX_FUTURE_SECONDS = env.int("LOYALTY_EVENT_MAX_FUTURE_SECONDS", default=300)
# Members' self-posted events must be recent: backdating would farm past days' earning caps.
LOYALTY_MEMBER_EVENT_MAX_AGE_HOURS = env.int("LOYALTY_MEMBER_EVENT_MAX_AGE_HOURS", default=24)
LOYALTY_EVENT_MAX_PROPERTIES_BYTES = env.int("LOYALTY_EVENT_MAX_PROPERTIES_BYTES", default=4096)
LOYALTY_EVENT_MAX_PROPERTIES_KEYS = env.int("LOYALTY_EVENT_MAX_PROPERTIES_KEYS", default=50)
# Nesting of objects and lists inside an event's properties (1 = flat values only).
LOYALTY_EVENT_MAX_PROPERTIES_DEPTH = env.int("LOYALTY_EVENT_MAX_PROPERTIES_DEPTH", default=4)
# A batch of LOYALTY_MAX_BATCH_ITEMS events with full properties must fit in one request body.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=6 * 1024 * 1024)
LOYALTY_SILENT_DAYS = env.int("LOYALTY_SILENT_DAYS", default=7)
LOYALTY_DORMANT_DAYS = env.int("LOYALTY_DORMANT_DAYS", default=30)
LOYALTY_CHURNED_DAYS = env.int("LOYALTY_CHURNED_DAYS", default=90)
# A new member becomes active after interacting on this many distinct business days.
LOYALTY_REGULAR_PARTICIPATION_DAYS = env.int("LOYALTY_REGULAR_PARTICIPATION_DAYS", default=2)
LOYALTY_WELCOME_WINDOW_HOURS = env.int("LOYALTY_WELCOME_WINDOW_HOURS", default=24)
LOYALTY_RECALL_DAYS = env.list("LOYALTY_RECALL_DAYS", cast=int, default=[30, 60, 90])
# A scenario missed (job not run) still fires this many days after its threshold, never later,
# so a first run over old data does not message everyone who lapsed long ago.
LOYALTY_SCENARIO_CATCH_UP_DAYS = env.int("LOYALTY_SCENARIO_CATCH_UP_DAYS", default=7)
LOYALTY_MEMBER_MAX_BATCH_ITEMS = env.int("LOYALTY_MEMBER_MAX_BATCH_ITEMS", default=100)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(
    {
        "BatchItemStatusEnum": "members.api.serializers.EVENT_STATUSES",
        "EventRejectReasonEnum": "members.api.serializers.EVENT_REJECT_REASONS",
    }
)

# --- Tiers (LOYALTY_TIER_...) ---------------------------------------------------------------------
# Members per reassessment chunk: one short transaction each, many chunks share the workers.
LOYALTY_TIER_CHUNK_SIZE = env.int("LOYALTY_TIER_CHUNK_SIZE", default=5000)
# On PostgreSQL the population job and the simulation decide by the tier rules compiled to SQL
# (one statement per chunk); off, they use the Python evaluation, like SQLite. Same outcomes.
LOYALTY_TIER_SQL_ASSESSMENT = env.bool("LOYALTY_TIER_SQL_ASSESSMENT", default=True)
# A running chunk whose worker has not finished it in this long is dispatched again by the
# watchdog (chunks are idempotent, so a slow one finishing too is harmless).
LOYALTY_TIER_CHUNK_LEASE_SECONDS = env.int("LOYALTY_TIER_CHUNK_LEASE_SECONDS", default=600)
LOYALTY_TIER_PROBATION_DAYS = env.int("LOYALTY_TIER_PROBATION_DAYS", default=30)
LOYALTY_TIER_MAX_PIN_DAYS = env.int("LOYALTY_TIER_MAX_PIN_DAYS", default=3660)
# tier.will_downgrade is sent when grace starts and again this many days before it ends.
LOYALTY_TIER_DOWNGRADE_WARNING_DAYS = env.int("LOYALTY_TIER_DOWNGRADE_WARNING_DAYS", default=7)
# An award of at least this many points reassesses the member at once (0 = never).
LOYALTY_TIER_REASSESS_AWARD_THRESHOLD = env.int(
    "LOYALTY_TIER_REASSESS_AWARD_THRESHOLD", default=500
)
LOYALTY_TIER_SIMULATION_SAMPLE_SIZE = env.int("LOYALTY_TIER_SIMULATION_SAMPLE_SIZE", default=5)
# The daily certification expiry announces grants that expired within this many days (once each).
LOYALTY_CERTIFICATION_EXPIRY_LOOKBACK_DAYS = env.int(
    "LOYALTY_CERTIFICATION_EXPIRY_LOOKBACK_DAYS", default=7
)

# --- Verifiable credentials (LOYALTY_CREDENTIAL_...) ---------------------------------------------
# The Ed25519 key that signs members' credentials: a Multikey secretKeyMultibase ("z3u2...") or
# the base64 of the 32-byte seed; `manage.py create_credential_key` makes one. Without it, DEBUG
# (the demo) derives a key from SECRET_KEY - demo only: whoever knows SECRET_KEY can sign - and
# outside DEBUG the credential endpoints answer 503 credentials_not_configured.
LOYALTY_CREDENTIAL_SIGNING_KEY = env.str("LOYALTY_CREDENTIAL_SIGNING_KEY", default="")
# publicKeyMultibase values of keys replaced by a rotation: what they signed still verifies.
LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS = env.list(
    "LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS", default=[]
)
# The public origin of this API, for the URLs written into credentials (issuer, verification).
_CREDENTIAL_HOST = next((host.lstrip(".") for host in ALLOWED_HOSTS if host != "*"), "localhost")
LOYALTY_CREDENTIAL_BASE_URL = env.str(
    "LOYALTY_CREDENTIAL_BASE_URL",
    default="http://127.0.0.1:8000" if DEBUG else f"https://{_CREDENTIAL_HOST}",
)
# The issuer's id (empty: <base URL>/api/v1/credentials/issuer/, which publishes its keys) and
# display name. Changing the id makes earlier credentials fail verification (a new key does not,
# once the old one is listed in LOYALTY_CREDENTIAL_RETIRED_PUBLIC_KEYS).
LOYALTY_CREDENTIAL_ISSUER = {
    "id": env.str("LOYALTY_CREDENTIAL_ISSUER_ID", default=""),
    "name": env.str("LOYALTY_CREDENTIAL_ISSUER_NAME", default="Loyalty program"),
}
# Largest credential the public verification endpoint reads (bytes); larger bodies are 413.
LOYALTY_CREDENTIAL_MAX_BYTES = env.int("LOYALTY_CREDENTIAL_MAX_BYTES", default=64 * 1024)

# --- More than one machine: read replica, routing, connection pooling (docs/deployment.md) -----
# A streaming replica of the primary for analytics reads; everything else reads and writes the
# primary (core/db_router.py). Tests mirror it onto the default database.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = {
        **env.db_url_config(DATABASE_REPLICA_URL),
        "TEST": {"MIRROR": "default"},
    }
DATABASE_ROUTERS = ["core.db_router.PrimaryReplicaRouter"]
LOYALTY_ANALYTICS_DATABASE = env.str(
    "LOYALTY_ANALYTICS_DATABASE", default="replica" if DATABASE_REPLICA_URL else "default"
)
if LOYALTY_ANALYTICS_DATABASE not in DATABASES:
    raise ImproperlyConfigured(
        f"LOYALTY_ANALYTICS_DATABASE={LOYALTY_ANALYTICS_DATABASE!r} is not a configured database."
    )
# DB_POOL=true: a psycopg connection pool per process (Django's "pool" option) instead of one
# persistent connection per thread; pooled connections cannot also be persistent. Behind
# PgBouncer in transaction mode keep DB_POOL off and set DB_DISABLE_SERVER_SIDE_CURSORS=true.
DB_POOL = env.bool("DB_POOL", default=False)
for _alias, _database in DATABASES.items():
    if not _database["ENGINE"].endswith("postgresql"):
        continue
    if _alias != "default":
        _database.setdefault("CONN_MAX_AGE", DATABASES["default"]["CONN_MAX_AGE"])
        _database.setdefault("CONN_HEALTH_CHECKS", True)
        _database["OPTIONS"] = {**DATABASES["default"]["OPTIONS"], **_database.get("OPTIONS", {})}
    if DB_POOL:
        _database["CONN_MAX_AGE"] = 0
        _database["OPTIONS"]["pool"] = {
            "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DB_POOL_MAX_SIZE", default=10),
            "timeout": env.float("DB_POOL_TIMEOUT_SECONDS", default=5.0),
        }
    _database["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DB_DISABLE_SERVER_SIDE_CURSORS", default=False
    )

# --- Member read documents (core/read_cache.py) -------------------------------------------------
# GET me/ and a member's tier are cached whole and replaced on every change of the member (or of
# the catalog); a document also expires at the next business day and at the dates it shows (an
# expiry, the end of a grace period), and at the latest after this, which bounds the rest of what
# time alone changes (the continuous 90-day points figure). 0 = off. On by default only with a
# shared cache: a per-process cache would not hear other processes' writes.
LOYALTY_READ_CACHE_SECONDS = env.int("LOYALTY_READ_CACHE_SECONDS", default=300 if REDIS_URL else 0)

# --- Analytics (LOYALTY_ANALYTICS_..., LOYALTY_HEALTH_...) ---------------------------------------
# Analytics results are cached this long (keyed by parameters and the business hour; 0 = off).
LOYALTY_ANALYTICS_CACHE_SECONDS = env.int("LOYALTY_ANALYTICS_CACHE_SECONDS", default=300)
# Retention cells of weeks too old to receive events any more are kept this long.
LOYALTY_ANALYTICS_CLOSED_WEEKS_CACHE_SECONDS = env.int(
    "LOYALTY_ANALYTICS_CLOSED_WEEKS_CACHE_SECONDS", default=86400
)
# Funnel "regular participation": active on this many distinct days within the window that
# starts on the day of the first interaction (the active tier's rule: 4 days in 30).
LOYALTY_ANALYTICS_REGULAR_DAYS = env.int("LOYALTY_ANALYTICS_REGULAR_DAYS", default=4)
LOYALTY_ANALYTICS_REGULAR_WINDOW_DAYS = env.int("LOYALTY_ANALYTICS_REGULAR_WINDOW_DAYS", default=30)
LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS = env.int("LOYALTY_ANALYTICS_FUNNEL_DEFAULT_DAYS", default=90)
LOYALTY_ANALYTICS_FUNNEL_MAX_DAYS = env.int("LOYALTY_ANALYTICS_FUNNEL_MAX_DAYS", default=366)
LOYALTY_ANALYTICS_MAX_WEEKS = env.int("LOYALTY_ANALYTICS_MAX_WEEKS", default=52)
# Community health alerts: weekly post density down by this share or more (0.20 = 20%)...
LOYALTY_HEALTH_POST_DENSITY_DROP = env.float("LOYALTY_HEALTH_POST_DENSITY_DROP", default=0.20)
# ...shares per day (last 7 days) under this...
LOYALTY_HEALTH_MIN_SHARES_PER_DAY = env.float("LOYALTY_HEALTH_MIN_SHARES_PER_DAY", default=5.0)
# ...and the share of members with no interaction for LOYALTY_HEALTH_SILENT_DAYS above this.
LOYALTY_HEALTH_SILENT_DAYS = env.int("LOYALTY_HEALTH_SILENT_DAYS", default=30)
LOYALTY_HEALTH_MAX_SILENT_SHARE = env.float("LOYALTY_HEALTH_MAX_SILENT_SHARE", default=0.50)
