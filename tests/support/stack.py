"""Real databases, a real broker and real worker processes for the integration tests.

The suite runs on the embedded backends (SQLite files and the SQLAlchemy broker
transport over SQLite) by default, and on PostgreSQL and Redis when
``AIDLINK_TEST_BACKEND=servers`` with ``AIDLINK_TEST_POSTGRES_URL`` and
``AIDLINK_TEST_REDIS_URL`` set. An unreachable server is an error, never a skip.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import BaseWSGIServer, make_server

from shared.config import SERVICES, Settings
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime
from shared.taskqueue import prepare_broker

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = os.environ.get("AIDLINK_TEST_BACKEND", "embedded")
T = TypeVar("T")

# Which tests may touch a database or broker, and which pass runs them: a test marked
# ``backend`` runs on the embedded backends and again on PostgreSQL and Redis; one
# marked ``embedded`` runs on the embedded backends only. tests/conftest.py marks by
# folder and, under pytest, sets ``marks_of_running_test`` so that ``backend_settings``
# refuses a test that carries neither mark.
DATABASE_MARKS = ("backend", "embedded")
marks_of_running_test: Callable[[], set[str]] | None = None


def _check_marked() -> None:
    if marks_of_running_test is None:  # a benchmark or a script, not the test suite
        return
    if not marks_of_running_test() & set(DATABASE_MARKS):
        raise RuntimeError(
            "this test uses a database and a broker but is marked neither "
            "@pytest.mark.backend (its outcome depends on them: run it on both backends) "
            "nor @pytest.mark.embedded (run it on the embedded backends only)"
        )


def server_urls() -> tuple[str, str]:
    """The PostgreSQL maintenance database and this test process's Redis database.

    Each pytest-xdist worker flushes a Redis database of its own: worker ``gwN`` takes
    the number in ``AIDLINK_TEST_REDIS_URL`` less N (15, 14, 13, ... for ``/15``).
    """
    try:
        pg_url, redis_url = (
            os.environ["AIDLINK_TEST_POSTGRES_URL"],
            os.environ["AIDLINK_TEST_REDIS_URL"],
        )
    except KeyError as exc:
        raise RuntimeError(
            f"AIDLINK_TEST_BACKEND=servers needs {exc.args[0]} "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres, redis://127.0.0.1:6379/15)"
        ) from None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    if n:
        parts = urlsplit(redis_url)
        base = int(parts.path.strip("/") or 0)
        if base - n < 0:
            raise RuntimeError(
                f"pytest-xdist worker {worker} needs Redis database {base} - {n}: "
                "give AIDLINK_TEST_REDIS_URL a higher database number or run fewer workers"
            )
        redis_url = urlunsplit(parts._replace(path=f"/{base - n}"))
    return pg_url, redis_url


# Every test's databases are copies of databases migrated once per test process:
# running each service's migrations took about 0.5 s a test on SQLite and 2 s on
# PostgreSQL (CREATE DATABASE, then Alembic), a copy 10 ms and 0.15 s.
_sqlite_template: Path | None = None
_postgres_templates: dict[str, str] = {}


def _sqlite_file(settings: Settings, service: str) -> Path:
    return Path(make_url(settings.database_url(service)).database or "")


def _migrated_sqlite(settings: Settings) -> None:
    """Each service's SQLite file of ``settings``, copied from the template."""
    global _sqlite_template
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="aidlink-test-template-"))
        atexit.register(shutil.rmtree, folder, True)
        template = settings.with_overrides(
            database_urls={svc: f"sqlite:///{folder / (svc + '.db')}" for svc in SERVICES}
        )
        for service in SERVICES:
            upgrade(service, template)
            # Everything in the main file, nothing left in a write-ahead log.
            with sqlite3.connect(_sqlite_file(template, service)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        _sqlite_template = folder
    for service in SERVICES:
        target = _sqlite_file(settings, service)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_sqlite_template / f"{service}.db", target)


# A test's databases and its process's templates carry the process id, so that those a
# killed test process left behind (its atexit never ran) are found and dropped.
_LEFT_BEHIND = re.compile(r"aidlink_(?:t|tpl)_(\d+)_[0-9a-f]{10}_[a-z]+")


def _drop_left_behind(admin: Any) -> None:
    """Drop the test databases of test processes of this machine that are gone."""
    with admin.connect() as conn:
        names = conn.scalars(
            text("SELECT datname FROM pg_database WHERE datname LIKE :pattern"),
            {"pattern": "aidlink\\_t%"},
        ).all()
        gone = [
            name
            for name in names
            if (found := _LEFT_BEHIND.fullmatch(name)) and not _alive(int(found.group(1)))
        ]
        _drop(conn, gone)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process, alive
    return True


def _drop(conn: Any, names: Iterable[str]) -> None:
    for name in names:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _postgres_template(admin: Any, pg_url: str, service: str, base: Settings) -> str:
    """The name of this process's migrated template database of ``service``."""
    name = _postgres_templates.get(service)
    if name is None:
        if not _postgres_templates:
            _drop_left_behind(admin)
        name = f"aidlink_tpl_{os.getpid()}_{uuid.uuid4().hex[:10]}_{service}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        atexit.register(_drop_databases, pg_url, [name])
        url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        upgrade(service, base.with_overrides(database_urls={service: url}))
        _postgres_templates[service] = name
    return name


def _drop_databases(pg_url: str, names: list[str]) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            _drop(conn, names)
    finally:
        admin.dispose()


@contextmanager
def backend_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings pointing at fresh, migrated databases and an empty broker."""
    _check_marked()
    base = Settings.from_env({"AIDLINK_VAR_DIR": str(tmp_path / "var")}).with_overrides(
        # Tests sign in far more often than people do; the limits have tests of their own.
        ratelimit_login="10000/minute",
        ratelimit_writes="100000/minute",
        ratelimit_public="100000/minute",
        # Test receivers listen on 127.0.0.1.
        webhook_allow_private=True,
    )
    if BACKEND == "embedded":
        settings = base.with_overrides(outbox_sweep_grace=0.0)
        prepare_broker(settings)
        _migrated_sqlite(settings)
        yield settings
        return
    if BACKEND != "servers":
        raise RuntimeError(f"AIDLINK_TEST_BACKEND must be 'embedded' or 'servers', not {BACKEND!r}")
    pg_url, redis_url = server_urls()
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:10]
    names = {service: f"aidlink_t_{os.getpid()}_{suffix}_{service}" for service in SERVICES}
    templates = {service: _postgres_template(admin, pg_url, service, base) for service in SERVICES}
    with admin.connect() as conn:
        for service, name in names.items():
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{templates[service]}"'))
    try:
        settings = base.with_overrides(
            database_urls={
                service: make_url(pg_url).set(database=name).render_as_string(hide_password=False)
                for service, name in names.items()
            },
            broker_url=redis_url,
            outbox_sweep_grace=0.0,
        )
        yield settings
    finally:
        with admin.connect() as conn:
            _drop(conn, names.values())
        admin.dispose()


@dataclass
class Stack:
    """The services, each with its own database, on one broker."""

    settings: Settings
    apps: dict[str, Flask]
    _exit: ExitStack = field(default_factory=ExitStack)

    def runtime(self, service: str) -> ServiceRuntime:
        rt: ServiceRuntime = self.apps[service].extensions["aidlink"]
        return rt

    def client(self, service: str = "gateway") -> Any:
        return self.apps[service].test_client()

    def start_worker(
        self, service: str, module: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        """A real Celery worker process (prefork pool) for ``service``'s queue."""
        worker = WorkerProcess(
            self.settings, service, module or f"services.{service}.worker", env or {}
        )
        worker.start()
        # The test's databases and queues are thrown away with it: nothing a worker
        # still holds at the end matters, so it is killed rather than shut down warm
        # (which takes the prefork pool 3-6 s). Tests that need a warm shutdown call
        # ``stop()`` themselves.
        self._exit.callback(worker.discard)
        return worker

    def close(self) -> None:
        self._exit.close()
        for app in self.apps.values():
            app.extensions["aidlink"].dispose()


class WorkerProcess:
    """``celery worker`` for one service's queue, as the Procfile starts it."""

    def __init__(self, settings: Settings, service: str, module: str, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.service = service
        self.module = module
        self.log_path = settings.var_dir / f"worker-{service}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.settings.to_env(), "PYTHONPATH": str(REPO_ROOT), **self.env}
        self.settings.var_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.module,
                "worker",
                "-Q",
                self.service,
                "-n",
                f"{self.service}-{uuid.uuid4().hex[:6]}@%h",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def discard(self) -> None:
        """SIGKILL the worker's main process and its pool at once (unless it has
        already exited: its pid may belong to another process by now)."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in process_tree(self.process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish, then ack
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def serve(app: Flask) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` over real HTTP on a free port; returns its URL and a stopper."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll: shutdown() waits up to one interval (0.5 s by default) per server.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", stop


@contextmanager
def build_stack(settings: Settings) -> Iterator[Stack]:
    from services.community.app import create_app as create_community
    from services.dispatch.app import create_app as create_dispatch
    from services.donations.app import create_app as create_donations
    from services.gateway.app import create_app as create_gateway

    exit_stack = ExitStack()
    apps: dict[str, Flask] = {
        "donations": create_donations(settings, testing=True),
        "dispatch": create_dispatch(settings, testing=True),
        "community": create_community(settings, testing=True),
    }
    urls = dict(settings.service_urls)
    for service in ("donations", "dispatch", "community"):
        url, stop = serve(apps[service])
        exit_stack.callback(stop)
        urls[service] = url
    settings = settings.with_overrides(service_urls=urls)
    apps["gateway"] = create_gateway(settings, testing=True)
    stack = Stack(settings=settings, apps=apps)
    try:
        yield stack
    finally:
        stack.close()
        exit_stack.close()


def eventually(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last state."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        time.sleep(interval)
