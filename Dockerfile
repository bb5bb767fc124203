# One image for every aidlink process: the three web services, their Celery
# workers, beat and the one-shot `aidlink migrate`. docker-compose.yml picks the
# process with `command:`; the default below runs the gateway.

# --- build: install the project and its dependencies into a virtualenv --------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package is built from; the migrations under services/*/migrations
# are package data (pyproject.toml) and travel with `services`.
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# A regular (non-editable) install: the code lives in site-packages, so the
# runtime image needs no source tree.
RUN pip install --no-cache-dir .

# --- runtime: the virtualenv on a clean base, run as a non-root user ----------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIDLINK_LOG_FORMAT=json \
    AIDLINK_VAR_DIR=/app/var

# A writable home: gunicorn (25.1+) puts its control socket in ~/.gunicorn and
# only warns, at every start, when it cannot.
RUN groupadd --system --gid 10001 aidlink \
    && useradd --system --uid 10001 --gid aidlink --create-home --home-dir /home/aidlink \
       --shell /usr/sbin/nologin aidlink

# A font with Chinese characters, embedded in printed waybills and run sheets.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Writable by the app user (beat keeps its schedule file here); the rest of /app is not.
# A named volume mounted on /app/var starts with this ownership.
RUN mkdir -p /app/var/keys /app/var/archive && chown -R aidlink:aidlink /app/var

# Numeric, so that orchestrators can verify the image does not run as root.
USER 10001:10001

EXPOSE 8000 8001 8002

# --worker-tmp-dir: gunicorn's worker heartbeat files go to tmpfs, not to the
# container's overlay filesystem, where a slow write can get workers killed.
# --keep-alive: an idle connection stays open longer than a proxy in front keeps its
# own (nginx and most load balancers: 60 s); closed first by gunicorn (its default:
# 2 s), a connection the proxy reuses at that moment is reset.
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", \
     "--keep-alive", "75", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-", \
     "services.gateway.app:create_app()"]
