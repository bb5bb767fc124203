"""How fast does an event hop from the gateway's outbox to the donations inbox?

Measurement A (event hop): N organisations are registered at the gateway, each in a
unit of work whose commit triggers the outbox relay; the clock runs from the first
write until the donations ``inbox`` table holds all N events, applied by a real
donations Celery worker process.

Measurement B (reference): N ``bench.noop`` tasks go to the same broker and are run
by a worker process of the same kind (prefork, concurrency 1); each one commits one
UPDATE of a counter row in a database of the same kind as the services' databases.

The benchmark prints figures only; it never asserts timing and exits 0 whether or
not the target ratio is met.

    .venv/bin/python -m bench.event_hop --events 2000
    .venv/bin/python -m bench.event_hop --broker redis://127.0.0.1:6379/14 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

from celery import Celery
from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, func, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import make_url

from shared.config import SERVICES, Settings
from shared.db import make_engine
from shared.migrations import upgrade
from shared.taskqueue import SQLAlchemyChannel, make_celery, prepare_broker

REPO_ROOT = Path(__file__).resolve().parent.parent

NOOP_SERVICE = "bench"
NOOP_QUEUE = "bench"
NOOP_TASK = "bench.noop"
# The no-op worker reads the counter database's URL from here.
COUNTER_URL_VAR = "AIDLINK_BENCH_COUNTER_URL"

# The target: on Redis the event hop keeps at least half the no-op throughput.
TARGET_RATIO = 0.5

POLL_INTERVAL = 0.01
WARMUP_TIMEOUT = 120.0

# The same retry policy the outbox relay uses when it sends (shared.outbox).
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}

counter_metadata = MetaData()
counter_table = Table(
    "bench_counter",
    counter_metadata,
    Column("id", Integer, primary_key=True),
    Column("n", Integer, nullable=False),
)


class BenchError(RuntimeError):
    """The benchmark could not run to the end; the message says why."""


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while cleaning up, so neither can strand a worker;
    one that arrives meanwhile takes effect when the block ends."""
    received: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        # Now handled as usual (or held again by an enclosing block).
        signal.raise_signal(received[0])


# The no-op app ---------------------------------------------------------------------


def make_noop_celery(settings: Settings, counter_url: str) -> Celery:
    """A Celery app on queue ``bench`` with one task, ``bench.noop``."""
    app = make_celery(NOOP_SERVICE, settings)

    @cache
    def counter_engine() -> Engine:
        # Built on first use, i.e. in the pool's child process, after the fork.
        return make_engine(counter_url)

    @app.task(name=NOOP_TASK)
    def noop() -> None:
        with counter_engine().begin() as conn:
            conn.execute(
                sql_update(counter_table)
                .where(counter_table.c.id == 1)
                .values(n=counter_table.c.n + 1)
            )

    return app


def __getattr__(name: str) -> Any:
    # `celery -A bench.event_hop:noop_celery worker` builds the app from the environment.
    if name == "noop_celery":
        app = make_noop_celery(Settings.from_env(), os.environ[COUNTER_URL_VAR])
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Worker processes ------------------------------------------------------------------


@dataclass
class WorkerProcess:
    label: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise BenchError(
                f"the {self.label} worker exited with status {rc}; its log ends:\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM); the whole process group is killed if it lingers."""
        with no_interrupts():
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # The worker leads its own process group (start_new_session); this also takes
        # pool children an interrupted shutdown may have left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start_worker(
    label: str,
    app_path: str,
    queue: str,
    env: Mapping[str, str],
    log_dir: Path,
    loglevel: str = "WARNING",
    concurrency: int = 1,
) -> WorkerProcess:
    log_path = log_dir / f"worker-{label}.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_path,
        "worker",
        "-Q",
        queue,
        "-n",
        f"{label}-bench-{os.getpid()}@%h",
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        loglevel,
    ]
    return WorkerProcess(label, spawn(cmd, env, log_path), log_path)


def spawn(cmd: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A process of a benchmark's (a worker, beat, a web server), run from the
    repository with its output in ``log_path``, out of the terminal's process group:
    Ctrl-C reaches only the benchmark, which then shuts the process down itself."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def worker_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """This process's environment minus every aidlink setting, plus ``environ``, so the
    worker's Settings.from_env() sees exactly what this process's Settings was built from."""
    service_keys = {
        f"{svc.upper()}_{suffix}" for svc in SERVICES for suffix in ("DATABASE_URL", "URL")
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIDLINK_") and key != "BROKER_URL" and key not in service_keys
    }
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


# Broker and database helpers -------------------------------------------------------


def purge(app: Celery, *queues: str) -> int:
    """Empty ``queues``; on Redis, also forget their messages that workers took and
    did not acknowledge (a benchmark stops its workers at once): left in the
    transport's unacked hash, they would count as in flight for a later run's
    ``check-invariants`` on the same database, and come back on their queues after the
    visibility timeout."""
    purged = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in queues:
            purged += channel.queue_purge(queue) or 0
        unacked_key = getattr(channel, "unacked_key", None)
        if unacked_key and not isinstance(channel, SQLAlchemyChannel):
            client = channel.client
            for tag, raw in client.hgetall(unacked_key).items():
                with contextlib.suppress(ValueError, TypeError, IndexError):
                    if json.loads(raw)[2] in queues:
                        client.hdel(unacked_key, tag)
                        client.zrem(channel.unacked_index_key, tag)
                        purged += 1
    return purged


# The Redis commands a Kombu consumer waits in for its next message.
_WAITING_COMMANDS = frozenset({"brpop", "blpop", "brpoplpush", "blmove", "bzpopmin", "bzmpop"})


def other_consumers(app: Celery) -> list[str]:
    """The Redis clients already waiting for messages on ``app``'s broker database
    (``CLIENT LIST``: connected to the same ``db``, their last command a blocking pop,
    as a Kombu consumer's is between messages), as ``addr (age s)``; none on the
    embedded transport, whose file is the run's own.

    A benchmark starts its own workers: one found waiting before them is a worker an
    earlier run left behind (or another benchmark on the same database), which would
    take this run's messages, apply them to other databases, and leave this run's
    services never hearing of them."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if isinstance(channel, SQLAlchemyChannel) or not hasattr(channel, "client"):
            return []
        client = channel.client
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
        found = []
        for entry in client.client_list():
            command = str(entry.get("cmd", "")).split("|")[0].lower()
            if int(entry.get("db", -1)) == db and command in _WAITING_COMMANDS:
                found.append(f"{entry.get('addr')} ({entry.get('age')} s)")
        return found


def refuse_other_consumers(app: Celery) -> None:
    """Stop a benchmark before it starts when :func:`other_consumers` finds any."""
    found = other_consumers(app)
    if found:
        raise BenchError(
            f"{len(found)} other consumer(s) already wait on this broker database: "
            f"{', '.join(found)}. A worker left running by an earlier run (or another "
            "benchmark on the same database) would take this run's messages; stop it "
            "(e.g. pkill -f 'celery.*worker') or give --broker another database number."
        )


def wait_until(
    count: Callable[[], int],
    target: int,
    *,
    timeout: float,
    worker: WorkerProcess,
    what: str,
) -> float:
    """Poll ``count`` until it reaches ``target``; returns time.perf_counter() then."""
    deadline = time.perf_counter() + timeout
    last_check = 0.0
    while True:
        seen = count()
        now = time.perf_counter()
        if seen >= target:
            return now
        if now - last_check > 0.5:
            worker.check_alive()
            last_check = now
        if now > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}: {seen}/{target}")
        time.sleep(POLL_INTERVAL)


def polling_interval(settings: Settings) -> float | None:
    """The broker transport's polling interval, None for a transport that does not poll."""
    if settings.broker_is_redis:
        return None
    app = make_celery(NOOP_SERVICE, settings)
    with app.connection_for_write() as conn:
        interval = getattr(conn.transport, "polling_interval", None)
    return float(interval) if interval else None


def backend_name(url: str) -> str:
    if url.startswith(("redis://", "rediss://")):
        return "redis"
    if url.startswith(("sqla+", "sqlalchemy+")):
        inner = url.split("+", 1)[1]
        return f"sqla+{make_url(inner).get_backend_name()}"
    return make_url(url).get_backend_name()


def redacted(url: str) -> str:
    if url.startswith(("sqla+", "sqlalchemy+")):
        prefix, inner = url.split("+", 1)
        return f"{prefix}+{redacted(inner)}"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        from kombu.utils.url import maybe_sanitize_url

        return str(maybe_sanitize_url(url))


class ScratchDatabases:
    """Throwaway PostgreSQL databases, one per purpose, dropped at the end."""

    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        if url.get_backend_name() != "postgresql":
            raise BenchError(
                "--database-url takes a PostgreSQL server URL (the benchmark creates and "
                "drops a scratch database per service on it); omit it for SQLite files"
            )
        self.url = url
        self.token = uuid.uuid4().hex[:8]
        self.created: list[str] = []
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")

    def create(self, purpose: str) -> str:
        name = f"aidlink_bench_{self.token}_{purpose}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with no_interrupts(), self.admin.connect() as conn:
            for name in reversed(self.created):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
        self.admin.dispose()


# The benchmark ---------------------------------------------------------------------


@dataclass
class Result:
    label: str
    n: int
    sent_seconds: float
    done_seconds: float

    @property
    def throughput(self) -> float:
        return self.n / self.done_seconds if self.done_seconds > 0 else float("inf")

    @property
    def send_rate(self) -> float:
        return self.n / self.sent_seconds if self.sent_seconds > 0 else float("inf")


def organisation(i: int) -> dict[str, Any]:
    return {
        "name": f"Bench Hospital {i:06d}",
        "kind": "hospital",
        "region": "420102",
        "address": f"{i} Bench Road, Jiang'an District, Wuhan",
    }


def measure_event_hop(
    settings: Settings, env: Mapping[str, str], tmp: Path, n: int, timeout: float
) -> tuple[Result, dict[str, int], int]:
    """Measurement A; returns the result, the inbox outcomes and the dead letters."""
    from services.donations.app import create_app as create_donations_app
    from services.donations.models import Base as DonationsBase
    from services.gateway.app import create_app as create_gateway_app
    from services.gateway.orgs.service import register_organisation

    gateway = create_gateway_app(settings)
    donations = create_donations_app(settings)
    gateway_rt = gateway.extensions["aidlink"]
    donations_rt = donations.extensions["aidlink"]
    inbox = DonationsBase.metadata.tables["inbox"]
    dead_letters = DonationsBase.metadata.tables["dead_letters"]

    # A plain engine: reading must not take SQLite's write lock (make_engine begins
    # every transaction IMMEDIATE) and so slow the worker down.
    reader = create_engine(settings.database_url("donations"))

    def inbox_rows() -> int:
        with reader.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(inbox)) or 0)

    refuse_other_consumers(donations_rt.celery)
    purge(donations_rt.celery, "donations")
    worker = start_worker("donations", "services.donations.worker", "donations", env, tmp)
    try:
        with gateway.app_context():
            # Warm-up: one event end to end, so the worker is up and connected.
            with gateway_rt.unit_of_work() as session:
                register_organisation(
                    session=session, outbox=gateway_rt.outbox, data=organisation(0)
                )
            wait_until(
                inbox_rows, 1, timeout=WARMUP_TIMEOUT, worker=worker, what="the warm-up event"
            )
            base = inbox_rows()

            start = time.perf_counter()
            for i in range(1, n + 1):
                with gateway_rt.unit_of_work() as session:
                    register_organisation(
                        session=session, outbox=gateway_rt.outbox, data=organisation(i)
                    )
            sent = time.perf_counter()
            backlog = gateway_rt.outbox.backlog()
            if backlog:
                raise BenchError(
                    f"{backlog} event(s) left unpublished by the relay (see the log above); "
                    "the sweep does not run during the benchmark"
                )
            done = wait_until(
                inbox_rows,
                base + n,
                timeout=timeout,
                worker=worker,
                what="the donations inbox",
            )
        with reader.connect() as conn:
            outcomes = {
                str(outcome): int(count)
                for outcome, count in conn.execute(
                    select(inbox.c.outcome, func.count()).group_by(inbox.c.outcome)
                )
            }
            dead = int(conn.scalar(select(func.count()).select_from(dead_letters)) or 0)
    finally:
        with no_interrupts():
            worker.stop()
            # org.registered also goes to dispatch, whose worker is not running.
            with contextlib.suppress(Exception):
                purge(gateway_rt.celery, "dispatch", "donations")
            reader.dispose()
            gateway_rt.engine.dispose()
            donations_rt.engine.dispose()
    return Result("event hop", n, sent - start, done - start), outcomes, dead


def measure_noop(
    settings: Settings,
    env: Mapping[str, str],
    tmp: Path,
    counter_url: str,
    n: int,
    timeout: float,
    concurrency: int = 1,
) -> Result:
    """Measurement B, by a worker of ``concurrency`` processes."""
    counter = make_engine(counter_url)
    counter_metadata.create_all(counter)
    with counter.begin() as conn:
        conn.execute(counter_table.insert().values(id=1, n=0))
    counter.dispose()
    reader = create_engine(counter_url)

    def runs() -> int:
        with reader.connect() as conn:
            return int(conn.scalar(select(counter_table.c.n).where(counter_table.c.id == 1)) or 0)

    app = make_noop_celery(settings, counter_url)

    def send() -> None:
        app.send_task(NOOP_TASK, queue=NOOP_QUEUE, retry=True, retry_policy=SEND_RETRY_POLICY)

    refuse_other_consumers(app)
    purge(app, NOOP_QUEUE)
    worker = start_worker(
        "noop",
        "bench.event_hop:noop_celery",
        NOOP_QUEUE,
        {**env, COUNTER_URL_VAR: counter_url},
        tmp,
        concurrency=concurrency,
    )
    try:
        send()
        wait_until(runs, 1, timeout=WARMUP_TIMEOUT, worker=worker, what="the warm-up task")
        base = runs()
        start = time.perf_counter()
        for _ in range(n):
            send()
        sent = time.perf_counter()
        done = wait_until(runs, base + n, timeout=timeout, worker=worker, what="the no-op tasks")
    finally:
        with no_interrupts():
            worker.stop()
            with contextlib.suppress(Exception):
                purge(app, NOOP_QUEUE)
            reader.dispose()
    return Result("no-op", n, sent - start, done - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.event_hop",
        description="Throughput of the gateway -> donations event hop against no-op tasks.",
    )
    parser.add_argument("--events", type=int, default=2000, help="events and tasks (default 2000)")
    parser.add_argument(
        "--broker",
        default=None,
        help="Celery broker URL, e.g. redis://127.0.0.1:6379/14 "
        "(default: the embedded SQLite broker in a temp dir)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres; "
        "a scratch database is created on it for each service and dropped at the end "
        "(default: a temp SQLite file per service)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for each measurement to drain (default 600, plus twice the "
        "expected time on a polling broker)",
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    return args


def report(
    settings: Settings,
    counter_url: str,
    hop: Result,
    outcomes: dict[str, int],
    dead: int,
    noop: Result,
    polling_interval: float | None,
) -> None:
    broker = backend_name(settings.broker_url)
    database = backend_name(settings.database_url("donations"))
    ratio = hop.throughput / noop.throughput
    print()
    print("aidlink event-hop benchmark")
    print(f"  broker     {broker}  ({redacted(settings.broker_url)})")
    print(f"  databases  {database}  (gateway, donations and the no-op counter)")
    print("  workers    one process per measurement: prefork, concurrency 1")
    print(f"  N          {hop.n} (after one warm-up message each)")
    print()
    print("A. event hop: gateway commit + outbox relay -> broker -> donations worker -> inbox")
    print(
        f"   relayed in   {hop.sent_seconds:8.3f} s  ({hop.send_rate:8.1f} events/s at the gateway)"
    )
    print(f"   in inbox in  {hop.done_seconds:8.3f} s")
    print(f"   throughput   {hop.throughput:8.1f} events/s")
    print(f"   inbox        {outcomes}, dead letters: {dead}")
    print()
    print(
        f"B. no-op: {NOOP_TASK} on queue {NOOP_QUEUE!r}, each run commits one UPDATE of a "
        f"counter row in a {backend_name(counter_url)} database"
    )
    print(f"   sent in      {noop.sent_seconds:8.3f} s  ({noop.send_rate:8.1f} tasks/s)")
    print(f"   all run in   {noop.done_seconds:8.3f} s")
    print(f"   throughput   {noop.throughput:8.1f} tasks/s")
    print()
    if broker == "redis":
        verdict = "met" if ratio >= TARGET_RATIO else "missed"
    else:
        verdict = f"not judged, this run used {broker}"
    print(
        f"ratio event_hop/noop  {ratio:.2f}   (target on Redis: >= {TARGET_RATIO:.2f}; {verdict})"
    )
    if polling_interval is not None:
        print(
            f"note: the {broker} transport polls. While its one message runs, a worker with "
            f"prefetch 1 and late acks may take no other, finds nothing and sleeps "
            f"{polling_interval:g} s; both figures measure that interval, not the work."
        )


def remove_tree(path: Path) -> None:
    with no_interrupts():
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="aidlink-bench-"))
        stack.callback(remove_tree, tmp)

        environ = {"AIDLINK_VAR_DIR": str(tmp), "AIDLINK_LOG_LEVEL": "WARNING"}
        if args.broker:
            environ["BROKER_URL"] = args.broker
        if args.database_url:
            scratch = ScratchDatabases(args.database_url)
            stack.callback(scratch.drop_all)
            for svc in ("gateway", "donations"):
                environ[f"{svc.upper()}_DATABASE_URL"] = scratch.create(svc)
            counter_url = scratch.create("noop")
        else:
            counter_url = f"sqlite:///{tmp / 'noop.db'}"
        settings = Settings.from_env(environ)
        env = worker_environ(environ)

        # What `aidlink migrate` does: the embedded broker's file in WAL mode, then the schemas.
        prepare_broker(settings)
        for svc in ("gateway", "donations"):
            upgrade(svc, settings)

        interval = polling_interval(settings)
        if interval is not None:
            print(
                f"note: {backend_name(settings.broker_url)} delivers about one message per "
                f"{interval:g} s to each worker; expect about {args.events * interval:.0f} s "
                "per measurement",
                flush=True,
            )
        print(
            f"event hop: {args.events} events, broker {backend_name(settings.broker_url)}, "
            f"databases {backend_name(settings.database_url('donations'))} ...",
            flush=True,
        )
        timeout = args.timeout or 600.0 + 2 * args.events * (interval or 0.0)
        hop, outcomes, dead = measure_event_hop(settings, env, tmp, args.events, timeout)
        print(f"no-op reference: {args.events} tasks ...", flush=True)
        noop = measure_noop(settings, env, tmp, counter_url, args.events, timeout)
        report(settings, counter_url, hop, outcomes, dead, noop, interval)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; workers stopped and temp files removed", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
