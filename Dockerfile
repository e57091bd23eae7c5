# One image for every app process: web (the default command), the Celery workers, beat, migrate.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles \
    WEB_CONCURRENCY=4
WORKDIR /app

# Requirements first, so a code change does not reinstall torch. PyPI's Linux torch wheel brings
# CUDA, so the same image runs the worker on a GPU (docker-compose.gpu.yml) or on the CPU.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic imports the settings, which want a key: a throwaway one, so no secret is baked in.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 --home-dir /app app \
    && mkdir -p "$VAR_DIR/models" && chown -R app "$VAR_DIR"
USER app

EXPOSE 8000
# gthread: a request waiting for its answer holds a thread (blocked on Redis), not a process.
# Processes: WEB_CONCURRENCY (gunicorn reads it); threads: WEB_THREADS.
CMD exec gunicorn digitsite.wsgi:application --bind 0.0.0.0:8000 \
    --worker-class gthread --threads "${WEB_THREADS:-16}" --access-logfile -
