"""Configuration from environment variables.

Every default runs the embedded mode: SQLite databases under ``var/`` and Celery on
Kombu's SQLAlchemy transport over a SQLite file. Production sets the URLs below to
PostgreSQL and Redis; nothing else changes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SERVICES = ("gateway", "donations", "dispatch", "community")

DEFAULT_SERVICE_PORTS = {
    "gateway": 8000,
    "donations": 8001,
    "dispatch": 8002,
    "community": 8003,
}


# argon2id's passes, memory (KiB) and lanes for a password hash: OWASP's minimum
# (Password Storage Cheat Sheet), about 20 ms of one core.
PASSWORD_HASH_COST = (2, 19456, 1)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _key_file(var_dir: Path, name: str) -> str:
    """A signing key kept in ``var/keys/<name>``, made on first use.

    Embedded mode runs every process on one machine and one var/ folder, so they all
    read the same key. Production sets AIDLINK_SECRET_KEY and AIDLINK_INTERNAL_KEY.
    """
    path = var_dir / "keys" / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{name}.{secrets.token_hex(4)}")
    candidate.write_text(secrets.token_urlsafe(48))
    candidate.chmod(0o600)
    try:
        # Whoever links first wins; everyone else reads the winner's key.
        os.link(candidate, path)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return path.read_text().strip()


@dataclass(frozen=True)
class Settings:
    """Everything a service process needs to know about its surroundings."""

    var_dir: Path
    database_urls: dict[str, str]
    broker_url: str
    service_urls: dict[str, str]
    log_format: str = "text"
    log_level: str = "INFO"
    # Seconds an outbox row may stay unpublished before the sweep takes it over;
    # the relay normally publishes within milliseconds of the commit.
    outbox_sweep_grace: float = 10.0
    outbox_sweep_interval: float = 15.0
    # How many times one event may be delivered to a consumer before it is dead-lettered.
    max_deliveries: int = 5
    # The most events of one commit the relay sends a consumer in one task message
    # (applied in one transaction there); 1 sends each event on its own. Each task has
    # a cost of its own (its delivery counted, its transaction, its answers relayed):
    # a matching run's 200 reservations took 0.5-0.6 s to come back reserved in
    # tasks of 100 and 0.3 s in one.
    event_batch_max: int = 500
    # "inline": each commit's events are published by the committing thread, before
    # it goes on (but for a matching run's slices on PostgreSQL, relayed by a thread
    # while the next is written: Outbox.relaying_alongside); "background": by a relay
    # thread of the process (the web servers of the Procfile and compose: a request
    # does not wait on the broker).
    outbox_relay: str = "inline"
    # Database connections each service keeps open per process (a server database;
    # SQLite files are opened per connection anyway): at least the web server's threads
    # and a relay thread, so that a busy moment does not open and close connections.
    db_pool_size: int = 20
    # Redis re-delivers an unacknowledged message after this many seconds; it must be
    # longer than the longest task (task_time_limit).
    broker_visibility_timeout: int = 3600
    # The embedded broker: the longest an idle worker waits between two looks at its
    # queue's table; a message sent meanwhile wakes it within 0.05 s all the same
    # (shared.taskqueue.SQLAlchemyTransport). 0.05 polls every 0.05 s, as before.
    broker_idle_poll: float = 2.0
    task_time_limit: int = 300
    # Every event a producer committed reaches every subscriber within this many
    # seconds, whatever the broker lost: producers ask their subscribers what they have
    # taken in every tenth of it and send again what is missing (shared/catchup.py).
    event_delivery_bound: float = 300.0
    # False: outbox rows are not tracked per subscriber and nothing is asked or sent
    # again (the broker alone is trusted, as for benchmarks' reference runs).
    event_catch_up: bool = True
    # Outbox rows every subscriber has, inbox rows and delivery counts older than this
    # many days are archived (outbox and inbox, as JSON lines) and deleted; 0 keeps all.
    event_retention_days: float = 30.0
    # Where archived rows go; empty: <var>/archive.
    event_archive_dir: str = ""
    proxy_connect_timeout: float = 3.05
    proxy_read_timeout: float = 30.0
    # Signs users' access tokens (the gateway alone needs it).
    secret_key: str = ""
    # Signs the identity the gateway forwards to the services; every service needs it.
    internal_key: str = ""
    access_token_ttl: int = 900
    refresh_token_ttl: int = 14 * 86400
    internal_token_ttl: int = 60
    # Flask-Limiter storage: memory:// in embedded mode, the Redis broker otherwise.
    ratelimit_storage_url: str = "memory://"
    ratelimit_enabled: bool = True
    ratelimit_login: str = "10/minute"
    ratelimit_writes: str = "300/minute"
    # Requests to the public ledger (API, exports and page) per anonymous client address.
    ratelimit_public: str = "120/minute"
    # Seconds shared caches may keep a public ledger answer.
    ledger_max_age: int = 30
    # argon2id's cost of a password hash: OWASP's minimum (19 MiB, 2 passes, 1 lane;
    # about 20 ms of one core). Hashes made with other costs still verify, and are made
    # again with these at their next sign-in.
    password_hash_time_cost: int = PASSWORD_HASH_COST[0]
    password_hash_memory_kib: int = PASSWORD_HASH_COST[1]
    password_hash_parallelism: int = PASSWORD_HASH_COST[2]
    # Failed sign-ins in a row that lock an account, and for how long.
    lockout_threshold: int = 5
    lockout_seconds: int = 900
    # /metrics answers only with this bearer token, when set.
    metrics_token: str = ""
    # A Celery worker serves its metrics on this port, when set (0: not at all).
    worker_metrics_port: int = 0
    webhook_max_attempts: int = 6
    webhook_backoff: float = 10.0
    webhook_timeout: float = 10.0
    # Deliveries in a row that fail all their attempts before a subscription is disabled.
    webhook_disable_after: int = 5
    # Allow webhook URLs that resolve to loopback or private addresses.
    webhook_allow_private: bool = False
    # Reverse proxies in front of the gateway whose X-Forwarded-For/-Proto/-Host are
    # believed (0: none; the client is the connection's peer).
    trusted_proxies: int = 0
    # Matching: apply event-triggered and scheduled plans without a coordinator's
    # approval; wait this long after a change before matching its item; run everything
    # this often.
    matching_auto_approve: bool = False
    matching_debounce: float = 2.0
    matching_interval: float = 600.0
    # Shipments: reserved allocations are consolidated into planned shipments on their
    # own; a shipment with no update for this many seconds is overdue; a scanner's batch
    # holds at most this many rows; an update may be this many seconds ahead of our clock.
    shipment_auto_plan: bool = True
    shipment_stale_after: float = 86400.0
    shipment_batch_max_rows: int = 5000
    shipment_clock_skew: float = 300.0
    # Help from people: the crisis line a request that speaks of self-harm is shown at
    # once, and the priority groups the coordinators' rule serves first within an
    # urgency (comma-separated: medical_staff, patient, patient_family).
    crisis_line: str = "12356"
    help_priority_groups: tuple[str, ...] = ("medical_staff", "patient", "patient_family")
    # Who connects a helper and a seeker without either seeing the other's number:
    # empty (none: the timed reveal of the contact), "test" (records what it was asked
    # under var/), or "package.module:factory" taking these settings.
    help_contact_provider: str = ""
    # Days a helper's note on a session is kept before the community worker deletes it.
    help_note_retention_days: int = 365
    # Days a closed request for help keeps what the person wrote and how to reach them.
    help_request_retention_days: int = 90
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("AIDLINK_VAR_DIR") or "var").resolve()
        database_urls = {
            svc: env.get(f"{svc.upper()}_DATABASE_URL") or f"sqlite:///{var_dir / (svc + '.db')}"
            for svc in SERVICES
        }
        broker_url = env.get("BROKER_URL") or f"sqla+sqlite:///{var_dir / 'broker.db'}"
        service_urls = {
            svc: (
                env.get(f"{svc.upper()}_URL") or f"http://127.0.0.1:{DEFAULT_SERVICE_PORTS[svc]}"
            ).rstrip("/")
            for svc in SERVICES
        }
        log_format = env.get("AIDLINK_LOG_FORMAT", "text")
        ratelimit_default = (
            broker_url if broker_url.startswith(("redis://", "rediss://")) else "memory://"
        )
        if log_format not in ("text", "json"):
            raise ConfigError(f"AIDLINK_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        event_batch_max = _int(env, "AIDLINK_EVENT_BATCH_MAX", 500)
        hash_time = _int(env, "AIDLINK_PASSWORD_HASH_TIME_COST", PASSWORD_HASH_COST[0])
        hash_memory = _int(env, "AIDLINK_PASSWORD_HASH_MEMORY_KIB", PASSWORD_HASH_COST[1])
        hash_lanes = _int(env, "AIDLINK_PASSWORD_HASH_PARALLELISM", PASSWORD_HASH_COST[2])
        if hash_time < 1:
            raise ConfigError(
                f"AIDLINK_PASSWORD_HASH_TIME_COST must be at least 1, got {hash_time}"
            )
        if hash_lanes < 1:
            raise ConfigError(
                f"AIDLINK_PASSWORD_HASH_PARALLELISM must be at least 1, got {hash_lanes}"
            )
        if hash_memory < 8 * hash_lanes:
            raise ConfigError(
                "AIDLINK_PASSWORD_HASH_MEMORY_KIB must be at least 8 KiB per lane "
                f"({8 * hash_lanes}), got {hash_memory}"
            )
        if _int(env, "AIDLINK_TRUSTED_PROXIES", 0) < 0:
            raise ConfigError("AIDLINK_TRUSTED_PROXIES must be 0 or more (the proxies in front)")
        if not 1 <= event_batch_max <= 1000:
            raise ConfigError(
                f"AIDLINK_EVENT_BATCH_MAX must be between 1 and 1000, got {event_batch_max}"
            )
        db_pool_size = _int(env, "AIDLINK_DB_POOL_SIZE", 20)
        if db_pool_size < 1:
            raise ConfigError(f"AIDLINK_DB_POOL_SIZE must be at least 1, got {db_pool_size}")
        event_delivery_bound = _float(env, "AIDLINK_EVENT_DELIVERY_BOUND", 300.0)
        if event_delivery_bound < 1:
            raise ConfigError(
                "AIDLINK_EVENT_DELIVERY_BOUND must be at least 1 second, "
                f"got {event_delivery_bound:g}"
            )
        event_retention_days = _float(env, "AIDLINK_EVENT_RETENTION_DAYS", 30.0)
        if event_retention_days < 0:
            raise ConfigError(
                "AIDLINK_EVENT_RETENTION_DAYS must be 0 (keep everything) or more, "
                f"got {event_retention_days:g}"
            )
        help_note_retention_days = _int(env, "AIDLINK_HELP_NOTE_RETENTION_DAYS", 365)
        if help_note_retention_days < 1:
            raise ConfigError(
                "AIDLINK_HELP_NOTE_RETENTION_DAYS must be at least 1, "
                f"got {help_note_retention_days}"
            )
        help_request_retention_days = _int(env, "AIDLINK_HELP_REQUEST_RETENTION_DAYS", 90)
        if help_request_retention_days < 1:
            raise ConfigError(
                "AIDLINK_HELP_REQUEST_RETENTION_DAYS must be at least 1, "
                f"got {help_request_retention_days}"
            )
        outbox_relay = env.get("AIDLINK_OUTBOX_RELAY", "inline")
        if outbox_relay not in ("inline", "background"):
            raise ConfigError(
                f"AIDLINK_OUTBOX_RELAY must be 'inline' or 'background', got {outbox_relay!r}"
            )
        return cls(
            var_dir=var_dir,
            database_urls=database_urls,
            broker_url=broker_url,
            service_urls=service_urls,
            log_format=log_format,
            log_level=env.get("AIDLINK_LOG_LEVEL", "INFO").upper(),
            outbox_sweep_grace=_float(env, "AIDLINK_OUTBOX_SWEEP_GRACE", 10.0),
            outbox_sweep_interval=_float(env, "AIDLINK_OUTBOX_SWEEP_INTERVAL", 15.0),
            max_deliveries=_int(env, "AIDLINK_MAX_DELIVERIES", 5),
            event_batch_max=event_batch_max,
            outbox_relay=outbox_relay,
            db_pool_size=db_pool_size,
            broker_visibility_timeout=_int(env, "AIDLINK_BROKER_VISIBILITY_TIMEOUT", 3600),
            broker_idle_poll=_float(env, "AIDLINK_BROKER_IDLE_POLL", 2.0),
            task_time_limit=_int(env, "AIDLINK_TASK_TIME_LIMIT", 300),
            event_delivery_bound=event_delivery_bound,
            event_catch_up=_bool(env, "AIDLINK_EVENT_CATCH_UP", True),
            event_retention_days=event_retention_days,
            event_archive_dir=env.get("AIDLINK_EVENT_ARCHIVE_DIR") or "",
            proxy_connect_timeout=_float(env, "AIDLINK_PROXY_CONNECT_TIMEOUT", 3.05),
            proxy_read_timeout=_float(env, "AIDLINK_PROXY_READ_TIMEOUT", 30.0),
            secret_key=env.get("AIDLINK_SECRET_KEY") or _key_file(var_dir, "secret_key"),
            internal_key=env.get("AIDLINK_INTERNAL_KEY") or _key_file(var_dir, "internal_key"),
            access_token_ttl=_int(env, "AIDLINK_ACCESS_TOKEN_TTL", 900),
            refresh_token_ttl=_int(env, "AIDLINK_REFRESH_TOKEN_TTL", 14 * 86400),
            internal_token_ttl=_int(env, "AIDLINK_INTERNAL_TOKEN_TTL", 60),
            ratelimit_storage_url=env.get("AIDLINK_RATELIMIT_STORAGE_URL") or ratelimit_default,
            ratelimit_enabled=_bool(env, "AIDLINK_RATELIMIT_ENABLED", True),
            ratelimit_login=env.get("AIDLINK_RATELIMIT_LOGIN") or "10/minute",
            ratelimit_writes=env.get("AIDLINK_RATELIMIT_WRITES") or "300/minute",
            ratelimit_public=env.get("AIDLINK_RATELIMIT_PUBLIC") or "120/minute",
            ledger_max_age=_int(env, "AIDLINK_LEDGER_MAX_AGE", 30),
            password_hash_time_cost=hash_time,
            password_hash_memory_kib=hash_memory,
            password_hash_parallelism=hash_lanes,
            lockout_threshold=_int(env, "AIDLINK_LOCKOUT_THRESHOLD", 5),
            lockout_seconds=_int(env, "AIDLINK_LOCKOUT_SECONDS", 900),
            metrics_token=env.get("AIDLINK_METRICS_TOKEN") or "",
            worker_metrics_port=_int(env, "AIDLINK_WORKER_METRICS_PORT", 0),
            webhook_max_attempts=_int(env, "AIDLINK_WEBHOOK_MAX_ATTEMPTS", 6),
            webhook_backoff=_float(env, "AIDLINK_WEBHOOK_BACKOFF", 10.0),
            webhook_timeout=_float(env, "AIDLINK_WEBHOOK_TIMEOUT", 10.0),
            webhook_disable_after=_int(env, "AIDLINK_WEBHOOK_DISABLE_AFTER", 5),
            webhook_allow_private=_bool(env, "AIDLINK_WEBHOOK_ALLOW_PRIVATE", False),
            trusted_proxies=_int(env, "AIDLINK_TRUSTED_PROXIES", 0),
            matching_auto_approve=_bool(env, "AIDLINK_MATCHING_AUTO_APPROVE", False),
            matching_debounce=_float(env, "AIDLINK_MATCHING_DEBOUNCE", 2.0),
            matching_interval=_float(env, "AIDLINK_MATCHING_INTERVAL", 600.0),
            shipment_auto_plan=_bool(env, "AIDLINK_SHIPMENT_AUTO_PLAN", True),
            shipment_stale_after=_float(env, "AIDLINK_SHIPMENT_STALE_AFTER", 86400.0),
            shipment_batch_max_rows=_int(env, "AIDLINK_SHIPMENT_BATCH_MAX_ROWS", 5000),
            shipment_clock_skew=_float(env, "AIDLINK_SHIPMENT_CLOCK_SKEW", 300.0),
            crisis_line=(env.get("AIDLINK_CRISIS_LINE") or "12356").strip(),
            help_priority_groups=tuple(
                g.strip()
                for g in env.get(
                    "AIDLINK_HELP_PRIORITY_GROUPS", "medical_staff,patient,patient_family"
                ).split(",")
                if g.strip()
            ),
            help_contact_provider=(env.get("AIDLINK_HELP_CONTACT_PROVIDER") or "").strip(),
            help_note_retention_days=help_note_retention_days,
            help_request_retention_days=help_request_retention_days,
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` give these settings back, for
        starting another process of the same installation."""
        env = {
            "AIDLINK_VAR_DIR": str(self.var_dir),
            "BROKER_URL": self.broker_url,
            "AIDLINK_LOG_FORMAT": self.log_format,
            "AIDLINK_LOG_LEVEL": self.log_level,
            "AIDLINK_OUTBOX_SWEEP_GRACE": str(self.outbox_sweep_grace),
            "AIDLINK_OUTBOX_SWEEP_INTERVAL": str(self.outbox_sweep_interval),
            "AIDLINK_MAX_DELIVERIES": str(self.max_deliveries),
            "AIDLINK_EVENT_BATCH_MAX": str(self.event_batch_max),
            "AIDLINK_OUTBOX_RELAY": self.outbox_relay,
            "AIDLINK_DB_POOL_SIZE": str(self.db_pool_size),
            "AIDLINK_BROKER_VISIBILITY_TIMEOUT": str(self.broker_visibility_timeout),
            "AIDLINK_BROKER_IDLE_POLL": str(self.broker_idle_poll),
            "AIDLINK_TASK_TIME_LIMIT": str(self.task_time_limit),
            "AIDLINK_EVENT_DELIVERY_BOUND": str(self.event_delivery_bound),
            "AIDLINK_EVENT_CATCH_UP": "1" if self.event_catch_up else "0",
            "AIDLINK_EVENT_RETENTION_DAYS": str(self.event_retention_days),
            "AIDLINK_EVENT_ARCHIVE_DIR": self.event_archive_dir,
            "AIDLINK_PROXY_CONNECT_TIMEOUT": str(self.proxy_connect_timeout),
            "AIDLINK_PROXY_READ_TIMEOUT": str(self.proxy_read_timeout),
            "AIDLINK_SECRET_KEY": self.secret_key,
            "AIDLINK_INTERNAL_KEY": self.internal_key,
            "AIDLINK_ACCESS_TOKEN_TTL": str(self.access_token_ttl),
            "AIDLINK_REFRESH_TOKEN_TTL": str(self.refresh_token_ttl),
            "AIDLINK_INTERNAL_TOKEN_TTL": str(self.internal_token_ttl),
            "AIDLINK_RATELIMIT_STORAGE_URL": self.ratelimit_storage_url,
            "AIDLINK_RATELIMIT_ENABLED": "1" if self.ratelimit_enabled else "0",
            "AIDLINK_RATELIMIT_LOGIN": self.ratelimit_login,
            "AIDLINK_RATELIMIT_WRITES": self.ratelimit_writes,
            "AIDLINK_RATELIMIT_PUBLIC": self.ratelimit_public,
            "AIDLINK_LEDGER_MAX_AGE": str(self.ledger_max_age),
            "AIDLINK_PASSWORD_HASH_TIME_COST": str(self.password_hash_time_cost),
            "AIDLINK_PASSWORD_HASH_MEMORY_KIB": str(self.password_hash_memory_kib),
            "AIDLINK_PASSWORD_HASH_PARALLELISM": str(self.password_hash_parallelism),
            "AIDLINK_LOCKOUT_THRESHOLD": str(self.lockout_threshold),
            "AIDLINK_LOCKOUT_SECONDS": str(self.lockout_seconds),
            "AIDLINK_METRICS_TOKEN": self.metrics_token,
            "AIDLINK_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "AIDLINK_WEBHOOK_MAX_ATTEMPTS": str(self.webhook_max_attempts),
            "AIDLINK_WEBHOOK_BACKOFF": str(self.webhook_backoff),
            "AIDLINK_WEBHOOK_TIMEOUT": str(self.webhook_timeout),
            "AIDLINK_WEBHOOK_DISABLE_AFTER": str(self.webhook_disable_after),
            "AIDLINK_WEBHOOK_ALLOW_PRIVATE": "1" if self.webhook_allow_private else "0",
            "AIDLINK_TRUSTED_PROXIES": str(self.trusted_proxies),
            "AIDLINK_MATCHING_AUTO_APPROVE": "1" if self.matching_auto_approve else "0",
            "AIDLINK_MATCHING_DEBOUNCE": str(self.matching_debounce),
            "AIDLINK_MATCHING_INTERVAL": str(self.matching_interval),
            "AIDLINK_SHIPMENT_AUTO_PLAN": "1" if self.shipment_auto_plan else "0",
            "AIDLINK_SHIPMENT_STALE_AFTER": str(self.shipment_stale_after),
            "AIDLINK_SHIPMENT_BATCH_MAX_ROWS": str(self.shipment_batch_max_rows),
            "AIDLINK_SHIPMENT_CLOCK_SKEW": str(self.shipment_clock_skew),
            "AIDLINK_CRISIS_LINE": self.crisis_line,
            "AIDLINK_HELP_PRIORITY_GROUPS": ",".join(self.help_priority_groups),
            "AIDLINK_HELP_CONTACT_PROVIDER": self.help_contact_provider,
            "AIDLINK_HELP_NOTE_RETENTION_DAYS": str(self.help_note_retention_days),
            "AIDLINK_HELP_REQUEST_RETENTION_DAYS": str(self.help_request_retention_days),
        }
        for svc in SERVICES:
            env[f"{svc.upper()}_DATABASE_URL"] = self.database_urls[svc]
            env[f"{svc.upper()}_URL"] = self.service_urls[svc]
        return env

    def database_url(self, service: str) -> str:
        return self.database_urls[service]

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def event_archive_path(self) -> Path:
        """Where archived outbox and inbox rows are written."""
        return Path(self.event_archive_dir) if self.event_archive_dir else self.var_dir / "archive"

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def broker_is_sqlite(self) -> bool:
        return self.broker_url.startswith("sqla+sqlite")
