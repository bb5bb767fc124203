"""The back-end services' web apps in one process, told apart by the port a request
came in on.

The embedded stack (``make run``, the Procfile) serves donations, dispatch and
community from one gunicorn, bound to each service's address
(``DONATIONS_BIND``, ``DISPATCH_BIND``, ``COMMUNITY_BIND``): one interpreter holds
what the three import instead of three, which is most of what a laptop's stack
weighs. Each service keeps its own app, database, outbox relay and settings; only the
process is shared. The gateway keeps a process of its own, since it calls the others
over HTTP and must never wait for a thread its own requests are holding. Under
``docker compose`` each service runs in its own containers.

    gunicorn --bind 127.0.0.1:8001 --bind 127.0.0.1:8002 --bind 127.0.0.1:8003 \\
        'services.backends:create_app()'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shared.config import DEFAULT_SERVICE_PORTS, ConfigError

BACKENDS = ("donations", "dispatch", "community")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def ports(environ: Mapping[str, str] | None = None) -> dict[int, str]:
    """Each back-end service by the port it is bound to (``<SERVICE>_BIND``,
    ``host:port``, as the Procfile gives gunicorn)."""
    environ = os.environ if environ is None else environ
    found: dict[int, str] = {}
    for service in BACKENDS:
        name = f"{service.upper()}_BIND"
        bind = environ.get(name) or f"127.0.0.1:{DEFAULT_SERVICE_PORTS[service]}"
        _host, _, port_text = bind.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{name} must be host:port, got {bind!r}") from None
        if port in found:
            raise ConfigError(
                f"{name} gives port {port}, which {found[port].upper()}_BIND gives already: "
                "each service needs a port of its own"
            )
        found[port] = service
    return found


class ByPort:
    """A WSGI app that hands each request to the app of the port it came in on."""

    def __init__(self, apps: Mapping[int, WSGIApp]) -> None:
        self.apps = dict(apps)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            app = self.apps[int(environ.get("SERVER_PORT") or 0)]
        except (KeyError, ValueError):
            body = f"No service is served on port {environ.get('SERVER_PORT')!r}.\n".encode()
            start_response(
                "404 Not Found",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return app(environ, start_response)


def create_app() -> ByPort:
    from services.community.app import create_app as community
    from services.dispatch.app import create_app as dispatch
    from services.donations.app import create_app as donations

    factories: dict[str, Callable[[], WSGIApp]] = {
        "donations": donations,
        "dispatch": dispatch,
        "community": community,
    }
    return ByPort({port: factories[service]() for port, service in ports().items()})
