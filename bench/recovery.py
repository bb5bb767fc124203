"""How long does the catch-up take, with beat's production schedule, to bring back the
events the broker lost?

Every event a producer commits reaches every subscriber within
``AIDLINK_EVENT_DELIVERY_BOUND`` (300 s by default) whatever the broker lost: beat's
``<producer>.catch_up`` rounds, every tenth of the bound (30 s), ask each subscriber
which events it lacks and send those again (shared/catchup.py). The fault tests run
those rounds every 0.5 s, driven by the test; this benchmark runs them as production
does: a real ``celery -A services.beat beat`` process (the Procfile's), a real worker
process per service (prefork, concurrency 1, as the Procfile's), the bound left at its
default unless ``--bound`` says otherwise.

The events are pledges, each committed at the donations service in its own unit of
work and relayed (``pledge.created``) to dispatch and the gateway. The faults:

- ``flush``: the dispatch worker is stopped, ``--events`` pledges are committed, the
  gateway takes them in, and their messages wait on the dispatch queue when the broker
  is flushed (``FLUSHDB`` of the broker's Redis database: an operator's ``FLUSHALL`` on
  a Redis of its own; the queues, the exchanges' bindings and whatever beat had
  queued go with it). The dispatch worker is then started again.
- ``delete``: the same with the gateway's worker stopped and only the gateway's queue
  deleted (dispatch has its copies).

Before each fault the stack settles: every event published so far is confirmed by
every subscriber, so no question of the catch-up is lost with the fault (that, too,
is recovered, a round or two later; it is not what is measured). A round has just
confirmed the last events then, so the fault comes a random time within the round
interval later (``--phase random``), as a real one falls anywhere between two rounds;
``--phase after-round`` causes it at once, the slowest case (its events are still a
few seconds short of an interval old at the next round, and are asked about at the
one after). Use ``--repeat`` for several phases in one run. The clock runs from
the loss until every event a subscriber lacked at that moment is in its inbox (or
dead letters), polled every 0.25 s. The benchmark prints that time next to the bound
and the round interval, when the catch-up asked and sent its copies, how many events
were lost and how many the subscriber took in from a copy the catch-up sent again
(``inbox.caught_up``: *recovered*), and the load average. It prints figures only and
never fails on them; an event still missing after twice the bound is reported as such.

It needs a Redis broker of its own database (the flush empties that database) and
takes a few minutes with the defaults: a round every 30 s, and a lost event is first
asked about in the first round at least 30 s after it was published.

    .venv/bin/python -m bench.recovery --broker redis://127.0.0.1:6379/8 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.recovery --bound 30 --broker redis://127.0.0.1:6379/8 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.recovery --broker redis://127.0.0.1:6379/8   # SQLite files
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import func, select

from bench.event_hop import (
    BenchError,
    ScratchDatabases,
    WorkerProcess,
    backend_name,
    no_interrupts,
    purge,
    redacted,
    refuse_other_consumers,
    remove_tree,
    spawn,
    start_worker,
    worker_environ,
)
from shared.config import SERVICES, Settings
from shared.db import utcnow
from shared.events import subscribers_of
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime

PRODUCER = "donations"
POLL_INTERVAL = 0.25
FAULTS = ("flush", "delete")
# The subscriber whose worker is away, and whose messages are lost, in each fault.
AWAY = {"flush": "dispatch", "delete": "gateway"}
DONOR_REGION = "4403"
# Kombu's Redis transport keeps a queue in a list of its name, and its priorities in
# lists of the name, this separator and the priority.
PRIORITY_SEP = "\x06\x16"


# Processes -------------------------------------------------------------------------


def start_beat(env: Mapping[str, str], log_dir: Path, loglevel: str) -> WorkerProcess:
    """``celery -A services.beat beat``, as the Procfile starts it; its schedule file
    is in the run's own var dir (``AIDLINK_VAR_DIR``)."""
    log_path = log_dir / "beat.log"
    cmd = [sys.executable, "-m", "celery", "-A", "services.beat", "beat", "--loglevel", loglevel]
    return WorkerProcess("beat", spawn(cmd, env, log_path), log_path)


class Processes:
    """The workers and beat, each stopped (and its process group killed) at the end."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, loglevel: str) -> None:
        self.env = env
        self.log_dir = log_dir
        self.loglevel = loglevel
        self.workers: dict[str, WorkerProcess] = {}
        self.beat: WorkerProcess | None = None
        self.started = 0

    def start_worker(self, service: str) -> None:
        self.started += 1
        # A label of its own each time: each start keeps its own log.
        self.workers[service] = start_worker(
            f"{service}-{self.started}",
            f"services.{service}.worker",
            service,
            self.env,
            self.log_dir,
            self.loglevel,
        )

    def start_beat(self) -> None:
        self.beat = start_beat(self.env, self.log_dir, "INFO")

    def stop_worker(self, service: str) -> None:
        self.workers.pop(service).stop()

    def check_alive(self) -> None:
        for worker in self.workers.values():
            worker.check_alive()
        if self.beat is not None:
            self.beat.check_alive()

    def stop_all(self) -> None:
        with no_interrupts():
            for service in list(self.workers):
                self.workers.pop(service).stop()
            if self.beat is not None:
                self.beat.stop()
                self.beat = None


# The stack seen from its databases ----------------------------------------------------


class Stack:
    """Each service's runtime, for reading its outbox, inbox and catch-up rows (and, at
    the producer, committing pledges)."""

    def __init__(self, settings: Settings) -> None:
        from services.community.app import create_app as community
        from services.dispatch.app import create_app as dispatch
        from services.donations.app import create_app as donations
        from services.gateway.app import create_app as gateway

        factories = {
            "gateway": gateway,
            "donations": donations,
            "dispatch": dispatch,
            "community": community,
        }
        self.apps = {service: factories[service](settings) for service in SERVICES}
        self.runtimes: dict[str, ServiceRuntime] = {
            service: app.extensions["aidlink"] for service, app in self.apps.items()
        }

    def models(self, service: str) -> Any:
        models = self.runtimes[service].models
        if models is None:
            raise BenchError(f"{service} has no outbox and inbox tables")
        return models

    def dispose(self) -> None:
        with no_interrupts():
            for rt in self.runtimes.values():
                with contextlib.suppress(Exception):
                    rt.dispose()

    def lacking(self) -> dict[str, set[uuid.UUID]]:
        """Per subscriber, the published events it has not taken in (inbox or dead
        letters)."""
        lacking: dict[str, set[uuid.UUID]] = {}
        for producer in SERVICES:
            outbox = self.models(producer).outbox
            with self.runtimes[producer].session_factory() as session:
                rows = session.execute(
                    select(outbox.id, outbox.type).where(outbox.published_at.is_not(None))
                ).all()
            for event_id, kind in rows:
                for subscriber in subscribers_of(kind):
                    lacking.setdefault(subscriber, set()).add(event_id)
        for subscriber, ids in list(lacking.items()):
            ids -= self.taken_in(subscriber, ids)
            if not ids:
                del lacking[subscriber]
        return lacking

    def taken_in(self, subscriber: str, ids: set[uuid.UUID]) -> set[uuid.UUID]:
        return self.runtimes[subscriber].inbox.taken_in(sorted(ids))

    def caught_up(self, subscriber: str, ids: set[uuid.UUID]) -> int:
        """How many of ``ids`` ``subscriber`` took in from a copy the catch-up sent."""
        inbox = self.models(subscriber).inbox
        found = 0
        chunk_ids = sorted(ids)
        with self.runtimes[subscriber].session_factory() as session:
            for start in range(0, len(chunk_ids), 300):
                found += int(
                    session.scalar(
                        select(func.count())
                        .select_from(inbox)
                        .where(inbox.event_id.in_(chunk_ids[start : start + 300]), inbox.caught_up)
                    )
                    or 0
                )
        return found

    def unconfirmed(self) -> int:
        """Published events some subscriber has not yet confirmed to their producer."""
        total = 0
        for producer in SERVICES:
            outbox = self.models(producer).outbox
            with self.runtimes[producer].session_factory() as session:
                total += int(
                    session.scalar(
                        select(func.count())
                        .select_from(outbox)
                        .where(outbox.awaiting.is_not(None), outbox.published_at.is_not(None))
                    )
                    or 0
                )
        return total

    def standing(self, producer: str, subscriber: str) -> Any:
        catch_up = self.runtimes[producer].catch_up
        if catch_up is None:
            raise BenchError(f"{producer} has no catch-up (AIDLINK_EVENT_CATCH_UP is off?)")
        for behind in catch_up.behind():
            if behind.subscriber == subscriber:
                return behind
        raise BenchError(f"{producer} does not know subscriber {subscriber}")

    def last_asked(self, producer: str, subscriber: str) -> tuple[datetime | None, datetime | None]:
        """When ``producer`` last asked ``subscriber`` and last sent it copies."""
        with self.runtimes[producer].session_factory() as session:
            peer = session.get(self.models(producer).catch_up, subscriber)
            if peer is None:
                return None, None
            return peer.asked_at, peer.last_resent_at

    def pledge(self, donor: uuid.UUID, i: int) -> uuid.UUID:
        from services.donations.pledges.service import create_pledge

        app = self.apps[PRODUCER]
        rt = self.runtimes[PRODUCER]
        with app.app_context(), rt.unit_of_work() as session:
            pledge = create_pledge(
                session,
                rt.outbox,
                org_id=donor,
                data={
                    "lines": [{"item": "mask", "quantity": str(100 + i), "unit": "piece"}],
                    "origin": {"region": DONOR_REGION, "address": f"Shenzhen warehouse {i}"},
                },
            )
            return pledge.id


def verified_donor(settings: Settings) -> uuid.UUID:
    """A donor as the gateway's org.verified would have left it in the read models of
    donations and dispatch (its registration is not what is measured)."""
    from sqlalchemy import create_engine

    from services.dispatch.models import Organisation as DispatchOrg
    from services.donations.models import Organisation as DonationsOrg

    donor = uuid.uuid4()
    for service, model in (("donations", DonationsOrg), ("dispatch", DispatchOrg)):
        engine = create_engine(settings.database_url(service))
        with engine.begin() as conn:
            conn.execute(
                model.__table__.insert(),  # type: ignore[attr-defined]
                [
                    {
                        "id": donor,
                        "name": "Bench Foundation",
                        "kind": "foundation",
                        "region": DONOR_REGION,
                        "status": "verified",
                        "source_version": 1,
                    }
                ],
            )
        engine.dispose()
    return donor


# The broker ------------------------------------------------------------------------


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)


def queue_keys(client: Any, queue: str) -> list[bytes]:
    name = queue.encode()
    return [
        key
        for key in client.scan_iter(match=queue + "*")
        if key == name or key.startswith(name + PRIORITY_SEP.encode())
    ]


def held(client: Any, queue: str) -> int:
    """Messages waiting on ``queue``."""
    return sum(int(client.llen(key)) for key in queue_keys(client, queue))


# The measurement -------------------------------------------------------------------


@dataclass
class Recovery:
    fault: str
    subscriber: str
    events: int
    messages_lost: int
    lost: dict[str, int]
    seconds: float | None
    since_published: float | None
    missing: int
    recovered: int
    resent: int
    asked_after: float | None
    resent_after: float | None
    settled_in: float
    waited: float
    load: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))


def wait_settled(stack: Stack, processes: Processes, timeout: float) -> float:
    """Until every published event is confirmed by every subscriber; returns how long
    that took."""
    start = time.monotonic()
    while True:
        processes.check_alive()
        if not stack.lacking() and stack.unconfirmed() == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise BenchError(
                f"the stack did not settle within {timeout:.0f} s: "
                f"{stack.unconfirmed()} event(s) unconfirmed, lacking "
                f"{ {s: len(ids) for s, ids in stack.lacking().items()} }"
            )
        time.sleep(1.0)


def wait_taken_in(
    stack: Stack,
    processes: Processes,
    subscriber: str,
    ids: set[uuid.UUID],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while len(stack.taken_in(subscriber, ids)) < len(ids):
        processes.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{subscriber} did not take in the pledges within {timeout:.0f} s")
        time.sleep(POLL_INTERVAL)


def seconds_after(moment: datetime | None, origin: datetime) -> float | None:
    if moment is None or moment < origin:
        return None
    return (moment - origin).total_seconds()


def measure(
    fault: str,
    stack: Stack,
    processes: Processes,
    settings: Settings,
    donor: uuid.UUID,
    events: int,
    first: int,
    wait: float,
) -> Recovery:
    bound = settings.event_delivery_bound
    interval = bound / 10
    away = AWAY[fault]
    others = [s for s in subscribers_of("pledge.created") if s != away]
    client = redis_client(settings.broker_url)
    try:
        settled_in = wait_settled(stack, processes, timeout=4 * interval + 120)
        # The stack settles just after a round has confirmed the last events; the fault
        # comes ``wait`` seconds later, somewhere in the round, as a real one would.
        resume = time.monotonic() + wait
        while time.monotonic() < resume:
            processes.check_alive()
            time.sleep(min(1.0, max(0.0, resume - time.monotonic())))
        before = stack.standing(PRODUCER, away)

        processes.stop_worker(away)
        published_at = utcnow()
        pledged = [stack.pledge(donor, first + i) for i in range(events)]
        backlog = stack.runtimes[PRODUCER].outbox.backlog()
        if backlog:
            raise BenchError(f"{backlog} pledge event(s) left unpublished by the relay")
        outbox = stack.models(PRODUCER).outbox
        with stack.runtimes[PRODUCER].session_factory() as session:
            ids = set(
                session.scalars(
                    select(outbox.id).where(
                        outbox.type == "pledge.created",
                        outbox.aggregate_id.in_([str(p) for p in pledged]),
                    )
                )
            )
        if len(ids) != events:
            raise BenchError(f"{len(ids)} pledge.created event(s) found for {events} pledges")
        for other in others:
            wait_taken_in(stack, processes, other, ids, timeout=120)

        lost = stack.lacking()
        messages = held(client, away)
        if fault == "flush":
            client.flushdb()
        else:
            keys = queue_keys(client, away)
            if keys:
                client.delete(*keys)
        lost_at = utcnow()
        lost_clock = time.monotonic()
        processes.start_worker(away)

        remaining = {s: set(found) for s, found in lost.items()}
        deadline = lost_clock + 2 * bound
        done: float | None = None
        # The first question to the subscriber and the first copies sent to it after
        # the loss (later rounds overwrite the producer's row).
        asked: datetime | None = None
        resent: datetime | None = None
        while True:
            asked_at, resent_at = stack.last_asked(PRODUCER, away)
            if asked is None and asked_at is not None and asked_at > lost_at:
                asked = asked_at
            if resent is None and resent_at is not None and resent_at > lost_at:
                resent = resent_at
            for subscriber in list(remaining):
                remaining[subscriber] -= stack.taken_in(subscriber, remaining[subscriber])
                if not remaining[subscriber]:
                    del remaining[subscriber]
            now = time.monotonic()
            if not remaining:
                done = now
                break
            if now > deadline:
                break
            processes.check_alive()
            time.sleep(POLL_INTERVAL)

        after = stack.standing(PRODUCER, away)
        seconds = None if done is None else done - lost_clock
        return Recovery(
            fault=fault,
            subscriber=away,
            events=events,
            messages_lost=messages,
            lost={s: len(found) for s, found in lost.items()},
            seconds=seconds,
            since_published=(
                None if seconds is None else seconds + (lost_at - published_at).total_seconds()
            ),
            missing=sum(len(found) for found in remaining.values()),
            recovered=sum(stack.caught_up(s, found) for s, found in lost.items()),
            resent=after.resent - before.resent,
            asked_after=seconds_after(asked or after.asked_at, lost_at),
            resent_after=seconds_after(resent or after.last_resent_at, lost_at),
            settled_in=settled_in,
            waited=wait,
            load=os.getloadavg(),
        )
    finally:
        client.close()


# Report ----------------------------------------------------------------------------


def describe(fault: str, away: str) -> str:
    if fault == "flush":
        return f"FLUSHDB with the pledges queued for {away} (its worker away)"
    return f"{away}'s queue deleted with the pledges on it (its worker away)"


def figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def report(settings: Settings, args: argparse.Namespace, results: list[Recovery]) -> None:
    bound = settings.event_delivery_bound
    interval = bound / 10
    print()
    print("aidlink recovery benchmark: events the broker lost, brought back by beat's catch-up")
    print(f"  broker     {backend_name(settings.broker_url)}  ({redacted(settings.broker_url)})")
    print(f"  databases  {backend_name(settings.database_url(PRODUCER))}")
    print(
        "  processes  a worker per service (prefork, concurrency 1) and "
        "celery -A services.beat beat"
    )
    source = "--bound" if args.bound is not None else "the default"
    print(
        f"  bound      {bound:g} s ({source}); a catch-up round every {interval:g} s; "
        f"a lost event is first asked about {interval:g} to {2 * interval:g} s after "
        "its publication"
    )
    print(f"  events     {args.events} pledges per fault (pledge.created -> dispatch, gateway)")
    phase = (
        f"a random time within the {interval:g} s interval after a round"
        if args.phase == "random"
        else "just after a round (the slowest case)"
    )
    print(f"  faults at  {phase}")
    print()
    for r in results:
        lost = ", ".join(f"{n} at {s}" for s, n in sorted(r.lost.items())) or "none"
        print(f"{describe(r.fault, r.subscriber)}:")
        print(f"   lost               {lost}; {r.messages_lost} message(s) on its queue")
        if r.seconds is None:
            print(
                f"   NOT recovered      {r.missing} event(s) still missing after "
                f"{2 * bound:g} s (twice the bound)"
            )
        else:
            print(
                f"   recovered in       {r.seconds:.1f} s after the loss "
                f"({r.since_published:.1f} s after the pledges were published); "
                f"bound {bound:g} s, rounds every {interval:g} s"
            )
        print(
            f"   catch-up           first asked {r.subscriber} {figure(r.asked_after)} after the "
            f"loss, sent copies {figure(r.resent_after)} after; {r.resent} copies sent again, "
            f"{r.recovered} event(s) recovered (inbox.caught_up)"
        )
        print(
            f"   before the fault   settled in {r.settled_in:.1f} s (a round confirmed the "
            f"last events), then {r.waited:.1f} s; load average after "
            + " ".join(f"{x:.2f}" for x in r.load)
        )
    print()
    times = [r.seconds for r in results if r.seconds is not None]
    if times:
        total_lost = sum(sum(r.lost.values()) for r in results)
        recovered = sum(r.recovered for r in results)
        print(
            f"recovery after the loss: {min(times):.1f} to {max(times):.1f} s over "
            f"{len(times)} fault(s) (bound {bound:g} s, rounds every {interval:g} s); "
            f"{total_lost} event(s) lost, {recovered} recovered by the catch-up"
        )
    unrecovered = sum(r.missing for r in results)
    if unrecovered:
        print(f"{unrecovered} event(s) NOT recovered within twice the bound")


def run(args: argparse.Namespace) -> list[Recovery]:
    loglevel = "INFO" if args.keep_logs else "WARNING"
    results: list[Recovery] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="aidlink-recovery-"))
        if args.keep_logs:
            print(f"logs in {tmp}", flush=True)
        else:
            stack.callback(remove_tree, tmp)
        environ = {
            "AIDLINK_VAR_DIR": str(tmp),
            "AIDLINK_LOG_LEVEL": "WARNING",
            "BROKER_URL": args.broker,
        }
        if args.bound is not None:
            environ["AIDLINK_EVENT_DELIVERY_BOUND"] = f"{args.bound:g}"
        if args.database_url:
            scratch = ScratchDatabases(args.database_url)
            stack.callback(scratch.drop_all)
            for svc in SERVICES:
                environ[f"{svc.upper()}_DATABASE_URL"] = scratch.create(svc)
        settings = Settings.from_env(environ)
        if not settings.event_catch_up:
            raise BenchError("the catch-up is off (AIDLINK_EVENT_CATCH_UP)")
        env = worker_environ(environ)
        for svc in SERVICES:
            upgrade(svc, settings)
        donor = verified_donor(settings)
        services = Stack(settings)
        stack.callback(services.dispose)

        @stack.callback
        def purge_queues() -> None:
            with no_interrupts(), contextlib.suppress(Exception):
                purge(services.runtimes[PRODUCER].celery, *SERVICES)

        refuse_other_consumers(services.runtimes[PRODUCER].celery)
        purge_queues()
        processes = Processes(env, tmp, loglevel)
        stack.callback(processes.stop_all)
        print(
            f"recovery: {backend_name(settings.broker_url)} broker, "
            f"{backend_name(settings.database_url(PRODUCER))} databases, bound "
            f"{settings.event_delivery_bound:g} s (rounds every "
            f"{settings.event_delivery_bound / 10:g} s); load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            flush=True,
        )
        for service in SERVICES:
            processes.start_worker(service)
        processes.start_beat()

        # Warm-up: one pledge end to end, so every worker is up and connected.
        services.pledge(donor, 0)
        first = 1
        rng = random.Random(args.seed)
        interval = settings.event_delivery_bound / 10
        for _ in range(args.repeat):
            for fault in args.faults:
                wait = rng.uniform(0, interval) if args.phase == "random" else 0.0
                print(
                    f"{describe(fault, AWAY[fault])}: settling, {wait:.1f} s, then "
                    f"{args.events} pledges ...",
                    flush=True,
                )
                result = measure(
                    fault, services, processes, settings, donor, args.events, first, wait
                )
                first += args.events
                print(
                    f"   recovered in {figure(result.seconds)} "
                    f"({result.recovered} recovered by the catch-up)",
                    flush=True,
                )
                results.append(result)
        report(settings, args, results)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recovery",
        description="Recovery of events the broker lost, by beat's catch-up rounds.",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="a Redis broker URL of a database the benchmark may flush, e.g. "
        "redis://127.0.0.1:6379/8 (required: the faults are Redis's)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres; "
        "a scratch database is created on it for each service and dropped at the end "
        "(default: a temp SQLite file per service)",
    )
    parser.add_argument(
        "--bound",
        type=float,
        default=None,
        help="AIDLINK_EVENT_DELIVERY_BOUND in seconds for a quick check (default: unset, "
        "so production's 300 s, a round every 30 s)",
    )
    parser.add_argument(
        "--events", type=int, default=50, help="pledges committed per fault (default 50)"
    )
    parser.add_argument(
        "--fault",
        dest="faults",
        action="append",
        choices=FAULTS,
        help="the fault to cause (repeatable; default: flush, then delete)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="times to cause each fault in one run (default 1)"
    )
    parser.add_argument(
        "--phase",
        choices=("random", "after-round"),
        default="random",
        help="when the fault comes after the round that settled the stack: a random time "
        "within the round interval (default), or at once, i.e. just after a round: the "
        "slowest case, whose lost events are first asked about two rounds later",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the random phases (default: none)"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the workers' and beat's logs (workers at INFO) and say where",
    )
    args = parser.parse_args(argv)
    if not args.broker or not args.broker.startswith(("redis://", "rediss://")):
        parser.error(
            "needs --broker redis://HOST:PORT/DB, a Redis database of its own: the faults "
            "flush it and delete its queues (the embedded broker is not measured here)"
        )
    if args.bound is not None and args.bound < 1:
        parser.error("--bound must be at least 1 (second)")
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    args.faults = args.faults or list(FAULTS)
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with terminated_on_sigterm():
            run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; workers and beat stopped, scratch databases dropped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
