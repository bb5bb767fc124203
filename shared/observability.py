"""Request and correlation ids, and structured logs that carry them.

A request id names one HTTP request; a correlation id names the whole story it
started (the request, the events it caused, the events those caused). Both live in
context variables so log lines and new events pick them up without being passed
around by hand.
"""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# The id of the event being handled, which becomes the causation id of events it causes.
causation_id_var: ContextVar[str | None] = ContextVar("causation_id", default=None)
# The address of the client whose request is being served (None outside a request).
client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
CORRELATION_ID_HEADER = "X-Correlation-ID"


def new_id() -> str:
    return uuid.uuid4().hex


def current_correlation_id() -> str:
    return correlation_id_var.get() or request_id_var.get() or new_id()


class ContextFilter(logging.Filter):
    """Adds the ids of the current request and story to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id_var.get()
        record.correlation_id = correlation_id_var.get()
        return True


def configure_logging(service: str, log_format: str = "text", level: str = "INFO") -> None:
    """Send logs to stderr, as JSON in production or as readable text on a laptop."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(service))
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s "
                "%(service)s %(request_id)s %(correlation_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s "
                "(request=%(request_id)s correlation=%(correlation_id)s)"
            )
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_aidlink", False):
            root.removeHandler(existing)
    handler._aidlink = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
