"""Faults for the fault tests (tests/faults): a private Redis to restart, publishers
that deliver every event twice and out of order or that die between commit and
publish, commits that fail as if the connection dropped, a saga to interrupt, and the
accounting that proves nothing was lost or applied twice.

Worker processes get the same faults through ``tests.faults.worker``, configured by
the ``AIDLINK_TEST_FAULTS`` environment variable (JSON, see :func:`install`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import OperationalError

from shared.config import SERVICES, Settings
from shared.events import subscribers_of
from shared.runtime import ServiceRuntime
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.markers import write_marker
from tests.support.stack import Stack, WorkerProcess, eventually, process_tree

FAULTS_ENV = "AIDLINK_TEST_FAULTS"


# Processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own on a free port, persisting to an append-only
    file so a restart keeps every message (never the shared server on 6379), unless
    restarted with ``restart_empty``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ]
        )
        import redis

        def answers() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
            except redis.RedisError:
                return False

        eventually(answers, timeout=20)

    def stop(self) -> None:
        """SIGTERM: Redis finishes writing its append-only file and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)  # clients notice it is gone, and retry
        self.start()

    def restart_empty(self, down_for: float = 1.0) -> None:
        """Killed and started again without its append-only file: every message,
        waiting or unacknowledged, is gone (a Redis run without persistence, or a
        failover to a replica that had not received the last writes)."""
        import shutil

        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)
        (self.directory / "dump.rdb").unlink(missing_ok=True)
        time.sleep(down_for)
        self.start()

    def flushall(self) -> None:
        """An operator's FLUSHALL: every queue, unacknowledged message and binding."""
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=2)
        try:
            client.flushall()
        finally:
            client.close()


def kill_worker(worker: WorkerProcess) -> list[int]:
    """SIGKILL a worker's main process and its pool at once: nothing gets to shut
    down, acknowledge or re-queue anything."""
    assert worker.process is not None
    pids = process_tree(worker.process.pid)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.process.wait(10)
    return pids


# Publishers ---------------------------------------------------------------------------------


class TwiceOutOfOrder:
    """Sends every event twice, each copy held back a little (``countdown``) so that
    events published close together arrive reversed and interleaved with the
    duplicates of others."""

    def __init__(self, send_task: Callable[..., Any], spread: float = 1.0, seed: int = 8) -> None:
        self.send_task = send_task
        self.spread = spread
        self.rng = random.Random(seed)
        self.sent = 0
        self.lock = threading.Lock()

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        with self.lock:
            self.sent += 1
            sequence = self.sent
        step = self.spread / 4
        # Within each run of four events the later ones go first...
        first = (3 - sequence % 4) * step
        # ...and the second copy lands anywhere in the window.
        second = self.rng.uniform(0, self.spread)
        for countdown in (first, second):
            self._send(f"{service}.handle_event", service, message, countdown)

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        """A batch goes twice too: once in reverse order, once shuffled, each held
        back a little, and split in two so its halves arrive apart."""
        with self.lock:
            self.sent += 1
            backwards = list(reversed(messages))
            shuffled = self.rng.sample(messages, len(messages))
            delays = [self.rng.uniform(0, self.spread) for _ in range(4)]
        half = len(messages) // 2
        parts = (backwards[:half], backwards[half:], shuffled[:half], shuffled[half:])
        for part, countdown in zip(parts, delays, strict=True):
            if part:
                self._send(f"{service}.handle_events", service, part, countdown)

    def _send(self, task: str, service: str, argument: Any, countdown: float) -> None:
        self.send_task(
            task,
            args=[argument],
            queue=service,
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        )


class Switchable:
    """A publisher whose broker connection can be cut (``down``) and restored."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.refused = 0

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("broker unreachable (injected)")
        self.inner(service, message)

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("broker unreachable (injected)")
        self.inner.many(service, messages)


class DiesBeforePublishing:
    """The process dies (as under SIGKILL) after the commit and before the relay sends
    the event: its first ``times`` events of ``types``. Markers in ``markers`` count
    deaths across the processes that replace each other."""

    def __init__(self, inner: Any, markers: Path, types: list[str], times: int) -> None:
        self.inner = inner
        self.markers = markers
        self.types = set(types)
        self.times = times

    def __call__(self, service: str, message: dict[str, Any]) -> None:
        self._maybe_die([message])
        self.inner(service, message)

    def many(self, service: str, messages: list[dict[str, Any]]) -> None:
        self._maybe_die(messages)
        self.inner.many(service, messages)

    def _maybe_die(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if message.get("type") in self.types:
                died = len(list(self.markers.glob("died.*")))
                if died < self.times:
                    write_marker(self.markers / f"died.{message['id']}", str(os.getpid()))
                    os._exit(1)


class CommitFault:
    """Fails the commit of the first ``times`` transactions that wrote to one of
    ``tables`` with an OperationalError, as a connection dropped at COMMIT does: the
    transaction rolls back whole and the caller sees a transient database error."""

    def __init__(self, engine: Engine, tables: list[str], times: int) -> None:
        self.tables = tuple(t.lower() for t in tables)
        self.left = times
        self.failed = 0
        self.lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._saw)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._forget)

    def _saw(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lowered = statement.lower()
        if lowered.startswith(("insert", "update", "delete")) and any(
            f" {table}" in lowered or f'"{table}"' in lowered for table in self.tables
        ):
            conn.info["aidlink.faults.wrote"] = True

    def _forget(self, conn: Any) -> None:
        conn.info.pop("aidlink.faults.wrote", None)

    def _commit(self, conn: Any) -> None:
        if not conn.info.pop("aidlink.faults.wrote", False):
            return
        with self.lock:
            if self.left <= 0:
                return
            self.left -= 1
            self.failed += 1
        raise OperationalError("COMMIT", {}, ConnectionError("connection dropped (injected)"))


def install(rt: ServiceRuntime, spec: dict[str, Any]) -> None:
    """Apply a fault spec to a service runtime (in a worker process or in the test's):

    - ``{"publish": "twice_out_of_order"}``
    - ``{"dies_before_publishing": {"markers": DIR, "types": [...], "times": N}}``
    - ``{"commit_fault": {"tables": [...], "times": N}}``
    - ``{"stall": {"type": T, "markers": DIR, "seconds": S}}``: the first attempt at
      the first event of type T writes a marker and sleeps, for a test to kill it.
    """
    if spec.get("publish") == "twice_out_of_order":
        rt.outbox.publisher = TwiceOutOfOrder(rt.celery.send_task)
    if "dies_before_publishing" in spec:
        dies = spec["dies_before_publishing"]
        rt.outbox.publisher = DiesBeforePublishing(
            rt.outbox.publisher, Path(dies["markers"]), list(dies["types"]), int(dies["times"])
        )
    if "commit_fault" in spec:
        fault = spec["commit_fault"]
        CommitFault(rt.engine, list(fault["tables"]), int(fault["times"]))
    if "stall" in spec:
        _install_stall(rt, spec["stall"])
    if "redis_restore_every" in spec and rt.settings.broker_is_redis:
        # How often a Redis consumer looks for messages whose visibility timeout has run
        # out (Kombu: every 10 s, scanning one call in 10): every ``n`` seconds, so a
        # test need not wait minutes for what production waits an hour for anyway. A
        # worker whose connection is cut while it restores leaves the restoring lock in
        # Redis until it expires (Kombu: 300 s); it expires after the visibility timeout.
        every = float(spec["redis_restore_every"])
        rt.celery.conf.broker_transport_options = {
            **(rt.celery.conf.broker_transport_options or {}),
            "unacked_restore_interval": every,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(1, rt.settings.broker_visibility_timeout),
        }


def _install_stall(rt: ServiceRuntime, stall: dict[str, Any]) -> None:
    markers = Path(stall["markers"])
    kind = stall["type"]
    seconds = float(stall.get("seconds", 120))

    def attempt(evt: Any) -> bool:
        """Mark an attempt at ``evt``; True for the one attempt that stalls."""
        mine = sorted(markers.glob(f"{evt.id}.*"))
        if not mine and not list(markers.glob("*.1")):
            write_marker(markers / f"{evt.id}.1", str(os.getpid()))
            return True
        if mine:
            write_marker(markers / f"{evt.id}.{len(mine) + 1}", str(os.getpid()))
        return False

    apply = rt.inbox.handlers[kind]

    def stalling(session: Any, evt: Any) -> None:
        if attempt(evt):
            time.sleep(seconds)
        apply(session, evt)

    rt.inbox.handlers[kind] = stalling
    # Events of the type that arrive together go to its batch handler: stall there too.
    apply_many = rt.inbox.batch_handlers.get(kind)
    if apply_many is not None:
        batch_handler = apply_many

        def stalling_many(session: Any, events: list[Any]) -> None:
            if any([attempt(evt) for evt in events]):
                time.sleep(seconds)
            batch_handler(session, events)

        rt.inbox.batch_handlers[kind] = stalling_many


def worker_env(service: str, spec: dict[str, Any]) -> dict[str, str]:
    """The environment that starts ``tests.faults.worker`` for ``service`` with ``spec``."""
    return {"AIDLINK_TEST_SERVICE": service, FAULTS_ENV: json.dumps(spec)}


def start_faulty_worker(
    stack: Stack, service: str, spec: dict[str, Any], env: dict[str, str] | None = None
) -> WorkerProcess:
    """A worker with the faults of ``spec``, and ``env`` over the stack's settings
    (e.g. a ``BROKER_URL`` through a flaky link)."""
    return stack.start_worker(
        service, module="tests.faults.worker", env={**worker_env(service, spec), **(env or {})}
    )


@contextmanager
def terminating_connections(
    settings: Settings, every: float = 0.1, idle_every: int = 3, longest: float = 2.0
) -> Iterator[list[int]]:
    """On PostgreSQL, keep killing the connections to the test's databases
    (``pg_terminate_backend``) while the block runs: those in the middle of a
    statement or a transaction, and every ``idle_every``-th round the idle ones
    sitting in the services' pools too, so that even a saga too quick to be caught
    mid-transaction finds its pooled connections dead. Rounds start ``every`` seconds
    apart; each round that killed something makes the next pause half as long again,
    up to ``longest``, so that a saga slowed by a busy machine still gets transactions
    through between the kills instead of losing every one of them. Yields the running
    count of kills."""
    from tests.support.stack import server_urls

    pg_url, _ = server_urls()
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    names = [make_url(settings.database_url(s)).database for s in SERVICES]
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    killed = [0]
    stop = threading.Event()

    def loop() -> None:
        rounds = 0
        pause = every
        while not stop.wait(pause):
            rounds += 1
            states = ["idle"] if rounds % idle_every == 0 else []
            try:
                with engine.connect() as conn:
                    now = len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = ANY(:names) AND pid <> pg_backend_pid() "
                                "AND (state <> 'idle' OR state = ANY(:states))"
                            ),
                            {"names": names, "states": states},
                        ).all()
                    )
            except Exception:
                continue
            killed[0] += now
            if now:
                pause = min(longest, pause * 1.5)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join(10)
        engine.dispose()


# The saga -------------------------------------------------------------------------------------


TRANSIENT = (500, 502, 503, 504)


def post(
    client: Any,
    url: str,
    body: dict[str, Any],
    who: Account,
    *,
    status: int | tuple[int, ...] = 201,
    attempts: int = 40,
) -> Any:
    """POST as a careful client: one Idempotency-Key, retried on a server error or
    while the first try is still being processed, until it gets an answer."""
    key = uuid.uuid4().hex
    wanted = (status,) if isinstance(status, int) else status
    response = None
    for _ in range(attempts):
        try:
            response = client.post(url, json=body, headers={**who.headers, "Idempotency-Key": key})
        except OperationalError:
            # The test client lets a server error through as the exception itself.
            time.sleep(0.3)
            continue
        slug = (response.json or {}).get("type", "") if response.is_json else ""
        if response.status_code in TRANSIENT or (
            response.status_code == 409 and "idempotency-key-in-progress" in slug
        ):
            time.sleep(0.3)
            continue
        break
    assert response is not None
    assert response.status_code in wanted, (response.status_code, response.json)
    return response.json


@dataclass
class Saga:
    """Donors, recipients and a coordinator; pledges and needs submitted through the
    gateway and matched. Remembers what was submitted, for the accounting."""

    stack: Stack
    chief: Account
    donors: list[Account]
    hospitals: list[Account]
    pledges: list[dict[str, Any]] = field(default_factory=list)
    needs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def begin(cls, stack: Stack, donors: int = 2, hospitals: int = 2) -> Saga:
        client = stack.client()
        boss = admin(stack.apps["gateway"], client)
        return cls(
            stack=stack,
            chief=coordinator(client, boss),
            donors=[
                verified(client, boss, kind="foundation", region="4403") for _ in range(donors)
            ],
            hospitals=[
                verified(client, boss, kind="hospital", region=("420103", "420102")[i % 2])
                for i in range(hospitals)
            ],
        )

    def pledge(self, donor: Account, **items: int) -> dict[str, Any]:
        body = {
            "lines": [
                {"item": item, "quantity": str(quantity), "unit": _unit(item)}
                for item, quantity in items.items()
            ],
            "origin": {"region": "4403", "address": "Futian, Shenzhen"},
        }
        made = post(self.stack.client(), "/api/v1/pledges", body, donor)
        self.pledges.append(made)
        return made

    def need(self, hospital: Account, urgency: str = "high", **items: int) -> dict[str, Any]:
        body = {
            "lines": [
                {"item": item, "quantity": str(quantity), "unit": _unit(item), "urgency": urgency}
                for item, quantity in items.items()
            ],
            "location": {"region": hospital.org["region"], "address": "ward 3"},
        }
        made = post(self.stack.client(), "/api/v1/needs", body, hospital)
        self.needs.append(made)
        return made

    def submit(self, rounds: int = 1) -> None:
        """Each donor pledges masks and gloves, each hospital needs both: more is
        needed than pledged, so matching leaves some demand open."""
        for _ in range(rounds):
            for donor in self.donors:
                self.pledge(donor, mask=300, gloves_exam=120)
            for index, hospital in enumerate(self.hospitals):
                self.need(hospital, "critical" if index == 0 else "high", mask=400, gloves_exam=100)

    def post_needs(
        self, count: int, *, wards: int = 10, per_commit: int = 50, **quantities: int
    ) -> None:
        """``count`` needs of one line each, the items of ``quantities`` (item: how
        many each need asks for) in turn, spread over the hospitals and ``wards`` wards
        of each (the first hospital's critical, the others' high), written through
        dispatch's service layer as its API writes them, ``per_commit`` to a
        transaction: a run of hundreds of needs without hundreds of requests. Waits
        until dispatch knows the hospitals are verified, as the API's needs would
        otherwise be drafts."""
        from services.dispatch.models import Organisation
        from services.dispatch.needs.service import create_need

        app = self.stack.apps["dispatch"]
        rt = self.stack.runtime("dispatch")
        hospitals = {uuid.UUID(h.org_id) for h in self.hospitals}

        def hospitals_verified() -> bool:
            sweep_all(self.stack)
            with rt.session_factory() as session:
                known = set(
                    session.scalars(
                        select(Organisation.id).where(
                            Organisation.id.in_(hospitals), Organisation.status == "verified"
                        )
                    )
                )
            return known == hospitals

        eventually(hospitals_verified, timeout=90, interval=0.25)
        items = list(quantities.items())
        for start in range(0, count, per_commit):
            with app.app_context(), rt.unit_of_work() as session:
                for i in range(start, min(count, start + per_commit)):
                    hospital = self.hospitals[i % len(self.hospitals)]
                    item, quantity = items[i % len(items)]
                    urgency = "critical" if i % len(self.hospitals) == 0 else "high"
                    need = create_need(
                        session,
                        rt.outbox,
                        org_id=uuid.UUID(hospital.org_id),
                        org_verified=True,
                        created_by=uuid.UUID(hospital.user_id),
                        data={
                            "lines": [
                                {
                                    "item": item,
                                    "quantity": str(quantity),
                                    "unit": _unit(item),
                                    "urgency": urgency,
                                }
                            ],
                            "location": {
                                "region": hospital.org["region"],
                                "address": f"ward {i // len(self.hospitals) % wards + 1}",
                            },
                        },
                    )
                    self.needs.append({"id": str(need.id)})

    def supply_known(self, sweep: bool = False) -> bool:
        """Dispatch knows every pledge line submitted (sweeping leftover events as beat
        would, when ``sweep``)."""
        from services.dispatch.models import SupplyLine

        if sweep:
            sweep_all(self.stack)

        wanted = {uuid.UUID(line["id"]) for p in self.pledges for line in p["lines"]}
        with self.stack.runtime("dispatch").session_factory() as session:
            known = set(session.scalars(select(SupplyLine.id).where(SupplyLine.id.in_(wanted))))
        return known == wanted

    def match(
        self, items: tuple[str, ...] = ("mask", "gloves_exam"), *, first: bool = True
    ) -> dict[str, Any]:
        """A coordinator's run, applied at once; a 409 (another run holds the item)
        is tried again, as a person would. The ``first`` run waits until it proposes
        something: dispatch may not yet have heard that the organisations are
        verified."""
        for _ in range(100):
            run = post(
                self.stack.client(),
                "/api/v1/matching/runs",
                {"dry_run": False, "items": list(items)},
                self.chief,
                status=(201, 409),
            )
            if run.get("status") == "applied" and (run["allocations"] or not first):
                return dict(run)
            time.sleep(0.2)
        raise AssertionError("matching stayed busy")

    def ship(self, *, batch: int = 0) -> int:
        """Every planned shipment picked up and delivered, as the logistics staff's
        scans would say (posted as the coordinator); returns how many. With ``batch``,
        the scans go as a scanner's batches of that many shipments (both scans of each
        in one batch) rather than one request per scan."""
        from datetime import UTC, datetime, timedelta

        from services.dispatch.models import Shipment

        with self.stack.runtime("dispatch").session_factory() as session:
            planned = list(session.scalars(select(Shipment.id).where(Shipment.status == "planned")))
        now = datetime.now(UTC)
        if batch:
            for start in range(0, len(planned), batch):
                rows = [
                    {
                        "shipment_id": str(shipment_id),
                        "status": status,
                        "occurred_at": (now - timedelta(seconds=ago)).isoformat(),
                    }
                    for shipment_id in planned[start : start + batch]
                    for status, ago in (("picked_up", 60), ("delivered", 30))
                ]
                answer = post(
                    self.stack.client(),
                    "/api/v1/shipments/events:batch",
                    {"events": rows},
                    self.chief,
                    status=200,
                )
                assert answer["refused"] == 0, [
                    r for r in answer["results"] if r["outcome"] == "refused"
                ]
            return len(planned)
        for shipment_id in planned:
            for status, ago in (("picked_up", 60), ("delivered", 30)):
                post(
                    self.stack.client(),
                    f"/api/v1/shipments/{shipment_id}/events",
                    {"status": status, "occurred_at": (now - timedelta(seconds=ago)).isoformat()},
                    self.chief,
                )
        return len(planned)

    def delivered(self) -> bool:
        """Every allocation on a shipment is delivered, in dispatch and in donations."""
        from services.donations.models import Reservation

        shipped = [a.id for a in self.allocations() if a.status in SHIPPED_ALLOCATIONS]
        if not shipped or any(
            a.status != "delivered" for a in self.allocations() if a.id in shipped
        ):
            return False
        with self.stack.runtime("donations").session_factory() as session:
            statuses = set(
                session.scalars(
                    select(Reservation.status).where(Reservation.allocation_id.in_(shipped))
                )
            )
        return statuses == {"delivered"}

    def allocations(self) -> list[Any]:
        from services.dispatch.models import Allocation

        with self.stack.runtime("dispatch").session_factory() as session:
            return list(session.scalars(select(Allocation)))

    def decided(self, sweep: bool = True) -> bool:
        """Every allocation has had its answer from donations (sweeping leftover
        events as beat would, when ``sweep``)."""
        if sweep:
            sweep_all(self.stack)
        found = self.allocations()
        return bool(found) and all(a.status != "proposed" for a in found)


def _unit(item: str) -> str:
    return {"mask": "piece", "gloves_exam": "pair"}[item]


def sweep_all(stack: Stack) -> int:
    """Beat's outbox sweep of every service, and its catch-up round (which asks only
    about events published at least a tenth of the delivery bound ago), run here.
    Returns how many events the sweeps published."""
    sent = 0
    for service in SERVICES:
        rt = stack.runtime(service)
        # The database or broker may be down for the moment: the next sweep retries.
        with suppress(Exception):
            sent += rt.outbox.sweep()
        if rt.catch_up is not None:
            with suppress(Exception):
                rt.catch_up.ask()
    return sent


def recovered_by_catch_up(stack: Stack) -> dict[str, int]:
    """Per producer and subscriber, the events the subscriber took in from a copy the
    catch-up sent again (the broker had lost them)."""
    found: dict[str, int] = {}
    for service in SERVICES:
        rt = stack.runtime(service)
        assert rt.catch_up is not None
        for producer, (n, _last) in rt.catch_up.recovered().items():
            found[f"{producer}->{service}"] = n
    return found


def resent_by_catch_up(stack: Stack) -> dict[str, int]:
    """Per producer and subscriber, the copies the catch-up sent again."""
    found: dict[str, int] = {}
    for service in SERVICES:
        rt = stack.runtime(service)
        assert rt.catch_up is not None
        for standing in rt.catch_up.behind():
            if standing.resent:
                found[f"{standing.producer}->{standing.subscriber}"] = standing.resent
    return found


def start_workers(
    stack: Stack,
    spec: dict[str, Any] | None = None,
    only: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, WorkerProcess]:
    """A worker for every service (or ``only`` one), with the faults of ``spec``."""
    return {
        service: (
            start_faulty_worker(stack, service, spec or {}, env)
            if spec or env
            else stack.start_worker(service)
        )
        for service in SERVICES
        if only is None or service == only
    }


@contextmanager
def supervised(
    stack: Stack,
    workers: dict[str, WorkerProcess],
    spec: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[list[str]]:
    """While the block runs, start again any of ``workers`` that exits, as compose's
    restart policy does in production; yields the services restarted so far."""
    restarted: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            for service, worker in list(workers.items()):
                if worker.process is not None and worker.process.poll() is not None:
                    workers[service] = start_workers(stack, spec, only=service, env=env)[service]
                    restarted.append(service)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield restarted
    finally:
        stop.set()
        thread.join(10)


# The accounting -------------------------------------------------------------------------------


def unaccounted_events(stack: Stack) -> list[str]:
    """Every event any service wrote, against every subscriber's inbox: what was not
    published, or not taken in by a subscriber. Empty when nothing was lost."""
    missing: list[str] = []
    taken: dict[str, set[uuid.UUID]] = {}
    for service in SERVICES:
        rt = stack.runtime(service)
        assert rt.models is not None
        with rt.session_factory() as session:
            taken[service] = set(session.scalars(select(rt.models.inbox.event_id)))
    for service in SERVICES:
        rt = stack.runtime(service)
        assert rt.models is not None
        outbox = rt.models.outbox
        with rt.session_factory() as session:
            rows = session.execute(select(outbox.id, outbox.type, outbox.published_at)).all()
        for event_id, kind, published_at in rows:
            if published_at is None:
                missing.append(f"{service} never published {kind} {event_id}")
            for subscriber in subscribers_of(kind):
                if event_id not in taken[subscriber]:
                    missing.append(f"{subscriber} never took in {kind} {event_id} from {service}")
    return missing


def deliveries_of(stack: Stack, service: str) -> dict[str, int]:
    """How many times each event was handed to ``service``'s worker."""
    rt = stack.runtime(service)
    assert rt.models is not None
    deliveries = rt.models.deliveries
    with rt.session_factory() as session:
        return dict(session.execute(select(deliveries.event_id, deliveries.attempts)).all())


def inbox_outcomes(stack: Stack, service: str) -> dict[str, int]:
    rt = stack.runtime(service)
    assert rt.models is not None
    inbox = rt.models.inbox
    with rt.session_factory() as session:
        return dict(
            session.execute(select(inbox.outcome, func.count()).group_by(inbox.outcome)).all()
        )


# Allocations that are, or have been, on a shipment.
SHIPPED_ALLOCATIONS = ("reserved", "shipped", "delivered", "received")


def assert_accounted(saga: Saga, *, settle: float = 90.0) -> Any:
    """The end of every fault test: the system comes to rest, every invariant holds,
    every pledge and need submitted is there once, every allocation had exactly one
    answer, every reserved allocation is on exactly one shipment, and every event
    reached every subscriber."""
    from services.dispatch.models import Need, ShipmentLine, SupplyLine
    from services.donations.models import Pledge, Reservation
    from services.invariants import check

    stack = saga.stack
    try:
        eventually(saga.decided, timeout=settle, interval=0.5)
    except AssertionError:
        pending = [str(a.id) for a in saga.allocations() if a.status == "proposed"]
        raise AssertionError(f"allocations never answered: {pending}") from None

    def all_taken_in() -> bool:
        if unaccounted_events(stack):
            sweep_all(stack)
            return False
        return True

    try:
        eventually(all_taken_in, timeout=settle, interval=0.5)
    except AssertionError:
        raise AssertionError(f"events lost: {unaccounted_events(stack)}") from None
    report = check(stack.settings, settle=settle)
    assert report.settled, report.in_flight
    assert report.violations == [], [v.as_dict() for v in report.violations]

    assert report.counts["pledges"] == len(saga.pledges)
    assert report.counts["needs"] == len(saga.needs)
    with stack.runtime("donations").session_factory() as session:
        pledge_ids = set(session.scalars(select(Pledge.id)))
        reservations = {r.allocation_id: r for r in session.scalars(select(Reservation))}
    assert pledge_ids == {uuid.UUID(p["id"]) for p in saga.pledges}
    with stack.runtime("dispatch").session_factory() as session:
        need_ids = set(session.scalars(select(Need.id)))
        supply = set(session.scalars(select(SupplyLine.id)))
        shipped = list(session.scalars(select(ShipmentLine.allocation_id)))
    assert need_ids == {uuid.UUID(n["id"]) for n in saga.needs}
    assert supply == {uuid.UUID(line["id"]) for p in saga.pledges for line in p["lines"]}

    allocations = saga.allocations()
    assert allocations, "the saga made no allocation"
    for allocation in allocations:
        reservation = reservations.get(allocation.id)
        if allocation.status == "reserved":
            assert reservation is not None and reservation.status == "active", allocation.id
        if allocation.status == "rejected":
            assert reservation is None or reservation.status == "rejected", allocation.id
    reserved = sorted(a.id for a in allocations if a.status in SHIPPED_ALLOCATIONS)
    # Shipments are planned from reserved allocations: each exactly once.
    assert sorted(shipped) == reserved
    assert unaccounted_events(stack) == []
    return report


def arrived_out_of_order(stack: Stack, consumer: str) -> int:
    """How many events ``consumer`` took in before an event written earlier (by the
    producers' clocks): proof that delivery was reordered."""
    written: dict[uuid.UUID, Any] = {}
    for service in SERVICES:
        rt = stack.runtime(service)
        assert rt.models is not None
        with rt.session_factory() as session:
            written.update(
                session.execute(select(rt.models.outbox.id, rt.models.outbox.created_at)).all()
            )
    rt = stack.runtime(consumer)
    assert rt.models is not None
    inbox = rt.models.inbox
    with rt.session_factory() as session:
        taken = [
            event_id
            for (event_id,) in session.execute(select(inbox.event_id).order_by(inbox.received_at))
            if event_id in written
        ]
    latest = None
    reordered = 0
    for event_id in taken:
        at = written[event_id]
        if latest is not None and at < latest:
            reordered += 1
        latest = at if latest is None or at > latest else latest
    return reordered


def held_by_broker(broker_url: str, queue: str) -> int:
    """Messages the broker still has for ``queue``: waiting, or taken by a worker that
    has not acknowledged them (and put back once their visibility timeout runs out)."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker_url)
        try:
            return int(client.llen(queue)) + int(client.hlen("unacked"))  # type: ignore[arg-type]
        finally:
            client.close()
    return len(broker_rows(broker_url, queue))


def broker_rows(broker_url: str, queue: str) -> list[tuple[bool, int]]:
    """(visible, version) of each row of the embedded broker's table for ``queue``."""
    from sqlalchemy import create_engine

    engine = create_engine(broker_url.split("+", 1)[1])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.visible, m.version FROM kombu_message m "
                    "JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name = :queue"
                ),
                {"queue": queue},
            )
            return [(bool(visible), int(version)) for visible, version in rows]
    finally:
        engine.dispose()


class GatewayProcess:
    """The gateway under gunicorn in a process of its own, as the Procfile runs it, on a
    fixed port so it can be killed and started again at the same address."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import sys

        import requests

        from tests.support.stack import REPO_ROOT

        env = {
            **os.environ,
            **self.settings.to_env(),
            "PYTHONPATH": str(REPO_ROOT),
            # As the Procfile sets it for its web servers: a SIGKILL may catch events
            # in the relay thread's hands, which the sweep must then deliver.
            "AIDLINK_OUTBOX_RELAY": "background",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--threads",
                    "8",
                    "services.gateway.app:create_app()",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

        def healthy() -> bool:
            try:
                return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        eventually(healthy, timeout=60, interval=0.2)

    def kill(self) -> None:
        """SIGKILL the master and its workers: requests in flight get no answer."""
        assert self.process is not None
        for pid in process_tree(self.process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
