"""Configuration from environment variables.

Every default runs the embedded mode: SQLite databases under ``var/`` and Celery on
Kombu's SQLAlchemy transport over a SQLite file. Production sets the URLs below to
PostgreSQL and Redis; nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SERVICES = ("gateway", "donations", "dispatch")

DEFAULT_SERVICE_PORTS = {"gateway": 8000, "donations": 8001, "dispatch": 8002}


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
    # Redis re-delivers an unacknowledged message after this many seconds; it must be
    # longer than the longest task (task_time_limit).
    broker_visibility_timeout: int = 3600
    task_time_limit: int = 300
    proxy_connect_timeout: float = 3.05
    proxy_read_timeout: float = 30.0
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
        if log_format not in ("text", "json"):
            raise ConfigError(f"AIDLINK_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
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
            broker_visibility_timeout=_int(env, "AIDLINK_BROKER_VISIBILITY_TIMEOUT", 3600),
            task_time_limit=_int(env, "AIDLINK_TASK_TIME_LIMIT", 300),
            proxy_connect_timeout=_float(env, "AIDLINK_PROXY_CONNECT_TIMEOUT", 3.05),
            proxy_read_timeout=_float(env, "AIDLINK_PROXY_READ_TIMEOUT", 30.0),
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
            "AIDLINK_BROKER_VISIBILITY_TIMEOUT": str(self.broker_visibility_timeout),
            "AIDLINK_TASK_TIME_LIMIT": str(self.task_time_limit),
            "AIDLINK_PROXY_CONNECT_TIMEOUT": str(self.proxy_connect_timeout),
            "AIDLINK_PROXY_READ_TIMEOUT": str(self.proxy_read_timeout),
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
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def broker_is_sqlite(self) -> bool:
        return self.broker_url.startswith("sqla+sqlite")
