"""The one settings module: every value comes from the environment, with a documented default.

The defaults run the service on one machine with nothing installed (SQLite, a private Valkey that
`make run` starts); DATABASE_URL and REDIS_URL switch the same code to PostgreSQL and Redis.
.env.example lists every variable.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from digitsite.cache import cache_settings

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


# The names a development service answers to: only such a service may run on a generated key.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "testserver"}


def _secret_key(*, debug: bool, allowed_hosts: list[str]) -> str:
    """SECRET_KEY from the environment (or a *_FILE path). Without one, a development service
    (DEBUG on, or answering to this machine's names only, as `make run` and the tests do) keeps a
    generated key in var/ (ignored by git); any other refuses to start, because a key made up at
    start would differ between processes and forge-proof nothing an operator can rotate."""
    if key := env.str("SECRET_KEY", default=""):
        return key
    if key_file := env.str("SECRET_KEY_FILE", default=""):
        return Path(key_file).read_text().strip()
    if not debug and not set(allowed_hosts) <= LOCAL_HOSTS:
        raise ImproperlyConfigured(
            f"SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off and ALLOWED_HOSTS "
            f"names other hosts than {sorted(LOCAL_HOSTS)}; see .env.example"
        )
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
SECRET_KEY = _secret_key(debug=DEBUG, allowed_hosts=ALLOWED_HOSTS)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "health_check",
    "django_prometheus",
    "recognizer",
    "worker",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "digitsite.urls"
WSGI_APPLICATION = "digitsite.wsgi.application"

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# Persistent connections: a request or task reuses its thread's connection instead of opening one.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web processes and the workers share one file. WAL lets readers go on while one writer
    # commits, and a commit appends to the log instead of rewriting pages; synchronous=NORMAL
    # is WAL's usual setting: a crashed process loses nothing, a power cut only the last commits.
    # A writer waits for the lock (timeout) rather than fail, in a fine-grained queue rather than
    # SQLite's own sleeps of up to 100 ms (digitsite/sqlite_backend: Django's backend otherwise).
    DATABASES["default"]["ENGINE"] = "digitsite.sqlite_backend"
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": (
            "PRAGMA journal_mode=WAL; "
            f"PRAGMA synchronous={env.str('SQLITE_SYNCHRONOUS', default='NORMAL')};"
        ),
    }
    # A file, not memory, so that a test's worker process sees the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
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
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Serve straight from the app folders when nobody ran collectstatic (tests, a first `runserver`).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# Security: production turns these on from the environment (see .env.example).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Limits -------------------------------------------------------------------------------------
# Bytes of one uploaded image, and of a whole request body (JSON base64 is 4/3 of the image).
MAX_IMAGE_BYTES = env.int("MAX_IMAGE_BYTES", default=2 * 1024 * 1024)
MAX_STROKES_BYTES = env.int("MAX_STROKES_BYTES", default=256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=4 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=4 * 1024 * 1024)
# Decoded size of one image, checked from its header before any pixel is decoded (API drawings,
# batch items on arrival and in the worker). Decoding and framing cost ~30 bytes a pixel at peak
# (measured: +116 MiB for a 2048x2048 drawing), so 4 Mpx bounds one request at ~120 MiB.
PREPROCESS_MAX_PIXELS = env.int("PREPROCESS_MAX_PIXELS", default=4 * 1024 * 1024)
PREPROCESS_MAX_SIDE = env.int("PREPROCESS_MAX_SIDE", default=4096)
# The admin shows an original as sent only when its header says it is at most this many pixels
# (the page's canvas is 280x280); otherwise only the stored 28x28 model input.
ADMIN_PREVIEW_MAX_PIXELS = env.int("ADMIN_PREVIEW_MAX_PIXELS", default=1024 * 1024)
# JSON bodies (and the strokes field): deeper nesting is a parse_error, before anything recurses.
JSON_MAX_DEPTH = env.int("JSON_MAX_DEPTH", default=16)
# Pen strokes: at most this many strokes, and points over all of them.
MAX_STROKES = env.int("MAX_STROKES", default=200)
MAX_STROKE_POINTS = env.int("MAX_STROKE_POINTS", default=20_000)
# The longest a GET on a submission may hold the connection waiting for the answer.
MAX_WAIT_SECONDS = env.float("MAX_WAIT_SECONDS", default=10.0)
# A waiting request blocks on a Redis signal from the worker (recognizer/answer_signal.py) and
# reads the row again at least this often, so a lost signal costs at most this much.
WAIT_RECHECK_SECONDS = env.float("WAIT_RECHECK_SECONDS", default=1.0)
# How long an answer's signal stays in Redis for a request that starts waiting after it.
ANSWER_SIGNAL_TTL_SECONDS = env.int("ANSWER_SIGNAL_TTL_SECONDS", default=60)
# With Redis unreachable, how often a waiting request reads the row instead.
WAIT_POLL_SECONDS = env.float("WAIT_POLL_SECONDS", default=0.02)

# --- The model ----------------------------------------------------------------------------------
MODEL_WEIGHTS = Path(env.str("MODEL_WEIGHTS", default=str(BASE_DIR / "ml" / "digit_model.pth")))
# "cuda", "cpu" or empty for CUDA when available.
MODEL_DEVICE = env.str("MODEL_DEVICE", default="")
# Torch threads in each worker process (0: torch's default, every core). Workers run side by side
# with the web processes, so one thread each keeps them from fighting over the cores.
WORKER_TORCH_THREADS = env.int("WORKER_TORCH_THREADS", default=1)
# Torch threads in each web process (digitsite/wsgi.py): requests preprocess one small image each,
# in parallel on gunicorn's threads, so one thread per op is fastest.
WEB_TORCH_THREADS = env.int("WEB_TORCH_THREADS", default=1)

# --- The learning loop (recognizer/model_registry.py, recognizer/retraining.py) ------------------
# Where model versions' weights live; every web and worker process must see the same folder.
MODELS_DIR = Path(env.str("MODELS_DIR", default=str(VAR_DIR / "models"))).resolve()
# Share (percent) of reviewed drawings kept out of training to judge candidates, chosen by id.
HOLDOUT_PERCENT = env.int("HOLDOUT_PERCENT", default=20)
# The gate (recognizer/retrain_gate.py) judges the answers both models give to the same images.
# Promote only if the candidate's gain on the drawn holdout is significant (McNemar's exact test)
# and its MNIST test loss is shown to be under the margin (a non-inferiority test), both at this
# level, on a holdout of at least RETRAIN_MIN_HOLDOUT drawings.
RETRAIN_SIGNIFICANCE = env.float("RETRAIN_SIGNIFICANCE", default=0.05)
RETRAIN_MNIST_MARGIN_POINTS = env.float("RETRAIN_MNIST_MARGIN_POINTS", default=0.3)
RETRAIN_MIN_HOLDOUT = env.int("RETRAIN_MIN_HOLDOUT", default=20)
# "Not a digit": what a candidate must still reject and accept (issue 14's targets), measured on
# ml/nondigits.py's test non-digits and ml/drawn.py's drawn evaluation (RETRAIN_DRAWN_N a style).
RETRAIN_MIN_NONDIGIT_REJECTION = env.float("RETRAIN_MIN_NONDIGIT_REJECTION", default=0.9)
RETRAIN_MAX_MNIST_REJECTION = env.float("RETRAIN_MAX_MNIST_REJECTION", default=0.01)
RETRAIN_MAX_DRAWN_REJECTION = env.float("RETRAIN_MAX_DRAWN_REJECTION", default=0.02)
RETRAIN_DRAWN_N = env.int("RETRAIN_DRAWN_N", default=300)
RETRAIN_NONDIGITS_N = env.int("RETRAIN_NONDIGITS_N", default=1000)
# The fine-tune schedule (--from-scratch uses ml/train.py's own recipe unless --epochs is given).
# The EMA starts at the active weights, so a slow one (0.999: ~950 steps keep ~40% of them) is
# what keeps the fine-tune from forgetting MNIST; chosen on MNIST validation (README).
RETRAIN_EPOCHS = env.int("RETRAIN_EPOCHS", default=2)
RETRAIN_LR = env.float("RETRAIN_LR", default=3e-4)
RETRAIN_EMA_DECAY = env.float("RETRAIN_EMA_DECAY", default=0.999)
# Drawings are repeated so that they make up this share of each epoch (at most MAX times each).
RETRAIN_DRAWN_SHARE = env.float("RETRAIN_DRAWN_SHARE", default=0.1)
RETRAIN_MAX_EXTRA_WEIGHT = env.int("RETRAIN_MAX_EXTRA_WEIGHT", default=30)
# Torch threads for retraining (0: torch's default, all cores).
RETRAIN_THREADS = env.int("RETRAIN_THREADS", default=0)
# Seconds the `recognizer.retrain` task may run (it runs on the `training` queue).
RETRAIN_TIME_LIMIT = env.int("RETRAIN_TIME_LIMIT", default=3600)
# The admin's "low confidence" review filter: answers below this confidence.
REVIEW_LOW_CONFIDENCE = env.float("REVIEW_LOW_CONFIDENCE", default=0.8)

# --- Celery -------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
# One Redis client per channel rather than one per publish and per acknowledgement (see the module).
if REDIS_URL.startswith("redis://"):
    CELERY_BROKER_TRANSPORT = "digitsite.broker:Transport"
CELERY_RESULT_BACKEND = None  # results live in the database rows, not in the broker
# That (disabled) backend holds no connection, so one object serves every thread. Otherwise Celery
# builds one per thread, scanning every installed package's entry points each time: tens of
# milliseconds on each of gunicorn's request threads when it first sends a task.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes every database connection before and after every task, unless
# this many tasks may share one. Workers keep theirs as the web does, by CONN_MAX_AGE and
# closing one an error left unusable (worker/tasks.py), so Celery's count is set out of reach.
CELERY_DB_REUSE_MAX = 2**31
# Acknowledgement is set per task in one place: recognizer/queue.py (RELIABLE_DELIVERY).
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_TASK_DEFAULT_QUEUE = "interactive"
CELERY_TASK_ROUTES = {
    "recognizer.predict_submission": {"queue": "interactive"},
    "recognizer.sweep_stuck_submissions": {"queue": "interactive"},
    "recognizer.retrain": {"queue": "training"},
    "recognizer.score_batch_chunk": {"queue": "batch"},
    "recognizer.sweep_stalled_batches": {"queue": "batch"},
}
# Dynamic batching in the interactive worker (celery-batches): one forward pass over up to this
# many queued drawings, or over what arrived within this many seconds of the first.
INTERACTIVE_BATCH_SIZE = env.int("INTERACTIVE_BATCH_SIZE", default=64)
INTERACTIVE_BATCH_WAIT_SECONDS = env.float("INTERACTIVE_BATCH_WAIT_SECONDS", default=0.003)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=30)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=60)
# A submit must answer quickly even when the broker is down: the sweeper enqueues it later.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    # Redelivery of an unacked task after this long; keep it above the longest task.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Submissions left queued/processing longer than this are enqueued again by the sweeper.
STUCK_AFTER_SECONDS = env.int("STUCK_AFTER_SECONDS", default=30)
SWEEP_EVERY_SECONDS = env.float("SWEEP_EVERY_SECONDS", default=15.0)
MAX_PREDICTION_ATTEMPTS = env.int("MAX_PREDICTION_ATTEMPTS", default=5)
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-submissions": {
        "task": "recognizer.sweep_stuck_submissions",
        "schedule": SWEEP_EVERY_SECONDS,
    },
    "sweep-stalled-batches": {
        "task": "recognizer.sweep_stalled_batches",
        "schedule": SWEEP_EVERY_SECONDS,
    },
}

# --- Batch jobs (recognizer/batches/, /api/v1/batches/) -----------------------------------------
# Images in one job, and bytes of one job: its request body, and its images once unpacked from
# base64 or a ZIP (which also bounds what a ZIP or gzip bomb can make the server inflate).
BATCH_MAX_ITEMS = env.int("BATCH_MAX_ITEMS", default=10_000)
BATCH_MAX_BYTES = env.int("BATCH_MAX_BYTES", default=100 * 1024 * 1024)
# Entries an uploaded ZIP may list (folders and metadata files included), checked before the
# archive's directory is read into memory.
BATCH_ZIP_MAX_MEMBERS = env.int("BATCH_ZIP_MAX_MEMBERS", default=2 * BATCH_MAX_ITEMS)
# Multipart `images` uploads: Django's own cap on files per request (its default, 100, would
# refuse most batches; a request over it is answered 413 too_many_items).
DATA_UPLOAD_MAX_NUMBER_FILES = BATCH_MAX_ITEMS
# Items one worker task preprocesses and scores with one model call.
BATCH_CHUNK_SIZE = env.int("BATCH_CHUNK_SIZE", default=256)
# Seconds one chunk may run (a chunk of large photos decodes for a while on a CPU).
BATCH_CHUNK_TIME_LIMIT = env.int("BATCH_CHUNK_TIME_LIMIT", default=600)
# A job where nothing happened for this long gets its unfinished chunks sent again.
BATCH_STALL_SECONDS = env.int("BATCH_STALL_SECONDS", default=900)
# Results per page of GET /api/v1/batches/{id}/results/ (also the most ?limit= may ask for), and
# jobs per page of GET /api/v1/batches/.
BATCH_RESULTS_PAGE_SIZE = env.int("BATCH_RESULTS_PAGE_SIZE", default=1000)
BATCH_LIST_PAGE_SIZE = env.int("BATCH_LIST_PAGE_SIZE", default=50)

# --- API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "recognizer.api.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "recognizer.api.errors.exception_handler",
    # Only the views that create work apply these (their get_throttles, in recognizer/api/).
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="60/min"),
        "user": env.str("THROTTLE_USER", default="600/min"),
        "label": env.str("THROTTLE_LABEL", default="30/min"),
    },
    # Reverse proxies in front of the web process. 0: a client's address is the socket's and
    # X-Forwarded-For is ignored (anyone can forge it); 1 behind one proxy (nginx, a load
    # balancer) that appends the address it saw, and so on. Throttles key on this address.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Digit recognition API",
    "DESCRIPTION": "Submit handwritten digits, poll for the prediction, label wrong answers.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Submissions and batch jobs both have a `status` with different choices: name them apart.
    "ENUM_NAME_OVERRIDES": {
        "SubmissionStatusEnum": "recognizer.models.Submission.Status",
        "BatchStatusEnum": "recognizer.models.BatchJob.Status",
        # Where a submission came from, and the two a client may say when it sends one.
        "SubmissionSourceEnum": "recognizer.models.Submission.Source",
        "ClientSourceEnum": [("page", "page"), ("api", "api")],
    },
}

# Django's cache holds DRF's throttle counts, so every web process must see the same one: Redis
# database CACHE_REDIS_DB on REDIS_URL's server (never the broker's database), or CACHE_URL
# (redis://HOST:PORT/DB, rediss://, locmemcache:// for a single process). Its clear() deletes only
# keys under CACHE_KEY_PREFIX, never the broker's queues (digitsite/cache.py).
CACHES = {
    "default": cache_settings(
        redis_url=REDIS_URL,
        cache_url=env.str("CACHE_URL", default=""),
        cache_db=env.int("CACHE_REDIS_DB", default=1),
        key_prefix=env.str("CACHE_KEY_PREFIX", default="digitsite"),
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Seconds /readyz waits for a Celery worker to answer its ping, and how long one answer is reused
# (so a flood of probes costs one check per interval, not a thread each).
READINESS_WORKER_PING_TIMEOUT = env.float("READINESS_WORKER_PING_TIMEOUT", default=1.0)
READINESS_CACHE_SECONDS = env.float("READINESS_CACHE_SECONDS", default=2.0)
# The Retry-After (seconds) of the 503 a request gets while the database is unreachable.
DATABASE_RETRY_AFTER = env.int("DATABASE_RETRY_AFTER", default=5)
