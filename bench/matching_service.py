"""A whole matching run as dispatch's worker performs it: read, solve, write, events.

``python -m bench.matching --through-service`` (see ``bench/matching.py``) fills a fresh
dispatch database with the benchmark's instance at each size (its supply lines as open
pledge lines, its demand lines as open needs of verified organisations, by bulk
inserts) and calls ``matching.service.run`` as a coordinator's applied run does. Each
phase is timed where the service does it: the read (``read_inputs``), the solver
(``matching.match``), and the write transactions (the run, its proposals, their
allocation events and outbox rows; a large plan in slices of whole needs, a
transaction each), whose length is how long SQLite's write lock, or PostgreSQL's row
locks, are held. Meanwhile a client posts a need every ``--post-every`` seconds
through dispatch's own API, and the latency of each answer is printed: a need posted
while a run solves must be accepted at once.

Targets (issue 25, at 20k lines a side): the whole run at most 3x the solver's own time,
the (longest) write transaction at most 1.5 s, every need posted during the run
answered within 500 ms. Figures only: nothing here fails on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from bench.event_hop import ScratchDatabases, backend_name, purge, remove_tree
from shared.config import SERVICES

TARGET_RUN_RATIO = 3.0
TARGET_WRITE_SECONDS = 1.5
TARGET_POST_SECONDS = 0.5


@dataclass
class Phases:
    read: float = 0.0
    solve: float = 0.0
    # Each write transaction's time (a large plan is written in slices).
    writes: list[float] = field(default_factory=list)
    relay: float = 0.0
    total: float = 0.0
    proposals: int = 0
    posts: list[tuple[float, int]] = field(default_factory=list)


def _uuid(text: str, space: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(space, text)


def fill(engine: Any, n: int, seed: int) -> tuple[uuid.UUID, str]:
    """The instance of ``bench.matching`` at size ``n``, as dispatch's rows. Dates are
    moved from the instance's day to today, so perishables are still good. Returns a
    hospital's id and region, for the needs posted during the run."""
    from bench.matching import TODAY, make_instance
    from services.dispatch.models import Need, NeedLine, Organisation, SupplyLine

    supply, demand = make_instance(n, seed)
    space = uuid.uuid4()
    shift = datetime.now(UTC).date() - TODAY
    now = datetime.now(UTC)
    orgs: dict[uuid.UUID, dict[str, Any]] = {}
    for s in supply:
        org = _uuid(s.donor_id, space)
        orgs[org] = {"id": org, "name": s.donor_id, "kind": "foundation"}
    for d in demand:
        org = _uuid(d.recipient_id, space)
        orgs[org] = {"id": org, "name": d.recipient_id, "kind": d.recipient_kind}
    poster = uuid.uuid4()
    orgs[poster] = {"id": poster, "name": "bench poster", "kind": "hospital"}
    supply_rows = [
        {
            "id": _uuid(s.id, space),
            "pledge_id": _uuid(f"pledge-{s.id}", space),
            "donor_org_id": _uuid(s.donor_id, space),
            "item": s.item,
            "standard": s.standard,
            "quantity": s.quantity,
            "reserved": 0,
            "shipped": 0,
            "delivered": 0,
            "proposed": 0,
            "status": "available",
            "pledge_status": "open",
            "best_before": s.best_before + shift if s.best_before else None,
            "restrictions": {
                **({"regions": list(s.restrict_regions)} if s.restrict_regions else {}),
                **(
                    {"recipient_kinds": list(s.restrict_recipient_kinds)}
                    if s.restrict_recipient_kinds
                    else {}
                ),
            },
            "anonymous": False,
            "region": s.location.region,
            "lat": s.location.lat,
            "lon": s.location.lon,
            "pledge_version": 1,
            "synced_at": now,
            "pledged_at": now,
        }
        for s in supply
    ]
    need_rows = []
    line_rows = []
    for d in demand:
        need = _uuid(f"need-{d.id}", space)
        need_rows.append(
            {
                "id": need,
                "org_id": _uuid(d.recipient_id, space),
                "status": "open",
                "region": d.location.region,
                "lat": d.location.lat,
                "lon": d.location.lon,
                "confirmed_at": now,
                "expires_at": now + timedelta(days=14),
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
        )
        line_rows.append(
            {
                "id": _uuid(d.id, space),
                "need_id": need,
                "line_no": 1,
                "item": d.item,
                "standards": list(d.standards),
                "quantity": d.quantity,
                "entered_quantity": str(d.quantity),
                "entered_unit": "piece",
                "urgency": d.urgency,
                "needed_by": d.needed_by + shift if d.needed_by else None,
                "status": "open",
            }
        )
    region = "420106"  # Wuchang, Wuhan: the needs posted during the run
    with Session(engine) as session, session.begin():
        session.execute(
            insert(Organisation),
            [
                {**o, "region": region, "status": "verified", "source_version": 1}
                for o in orgs.values()
            ],
        )
        for model, rows in ((SupplyLine, supply_rows), (Need, need_rows), (NeedLine, line_rows)):
            for first in range(0, len(rows), 5_000):
                session.execute(insert(model), rows[first : first + 5_000])
    return poster, region


@contextlib.contextmanager
def timed_phases(rt: Any, phases: Phases) -> Iterator[None]:
    """Time the service's own read, solve and write where it does them."""
    from services.dispatch import matching
    from services.dispatch.matching import service

    read_inputs, match, unit_of_work = service.read_inputs, matching.match, rt.unit_of_work

    def timed(name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(phases, name, getattr(phases, name) + time.perf_counter() - began)

        return call

    run_thread = threading.get_ident()

    @contextlib.contextmanager
    def timed_unit_of_work() -> Iterator[Session]:
        # The run's own transaction only: the needs posted meanwhile use theirs.
        if threading.get_ident() != run_thread:
            with unit_of_work() as session:
                yield session
            return
        began = time.perf_counter()
        committed: list[float] = []
        with unit_of_work() as session:
            # Ahead of the outbox's own hook, which relays the events once the
            # transaction (and SQLite's write lock) is over.
            def stamp(session: Session) -> None:
                # A savepoint released fires it too: only the commit counts.
                if not session.in_nested_transaction():
                    committed.append(time.perf_counter())

            event.listen(session, "after_commit", stamp, insert=True)
            yield session
        held = (committed[0] if committed else time.perf_counter()) - began
        phases.writes.append(held)
        phases.relay += time.perf_counter() - (committed[0] if committed else began)

    service.read_inputs = timed("read", read_inputs)
    matching.match = timed("solve", match)
    rt.unit_of_work = timed_unit_of_work
    # A relay thread publishes each slice while the next is written; the
    # run waits for what is left of it at its end (Outbox.relaying_alongside).
    flush = rt.outbox.flush
    rt.outbox.flush = timed("relay", flush)
    try:
        yield
    finally:
        service.read_inputs, matching.match = read_inputs, match
        rt.unit_of_work = unit_of_work
        rt.outbox.flush = flush


def post_needs(
    app: Any, org_id: uuid.UUID, region: str, every: float, stop: threading.Event, out: Phases
) -> None:
    """Post a need every ``every`` seconds until ``stop``, as the hospital's user
    through dispatch's API, recording each answer's latency and status."""
    from shared.identity import INTERNAL_HEADER, Identity, sign_internal

    identity = Identity(
        user_id=uuid.uuid4(),
        org_id=org_id,
        roles=frozenset({"recipient"}),
        org_kind="hospital",
        org_status="verified",
        via="session",
    )
    rt = app.extensions["aidlink"]
    client = app.test_client()
    body = {
        "location": {"region": region},
        "lines": [{"item": "mask", "quantity": "500", "unit": "piece", "urgency": "high"}],
    }
    while not stop.is_set():
        token = sign_internal(identity, rt.settings.internal_key, "dispatch", 600)
        began = time.perf_counter()
        answer = client.post("/api/v1/needs", json=body, headers={INTERNAL_HEADER: token})
        out.posts.append((time.perf_counter() - began, answer.status_code))
        if answer.status_code >= 400 and not out.posts[:-1]:
            print(f"  a need posted during the run was refused: {answer.get_json()}")
        stop.wait(every)


def measure(
    n: int, seed: int, database_url: str | None, post_every: float, broker: str | None = None
) -> Phases:
    from services.dispatch.app import create_app
    from services.dispatch.matching import service
    from services.dispatch.models import Allocation
    from shared.config import Settings
    from shared.db import make_engine
    from shared.migrations import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="aidlink-bench-matching-"))
    scratch = ScratchDatabases(database_url) if database_url else None
    saved = dict(os.environ)
    try:
        os.environ.update({"AIDLINK_VAR_DIR": str(tmp), "AIDLINK_LOG_LEVEL": "WARNING"})
        if scratch is not None:
            os.environ["DISPATCH_DATABASE_URL"] = scratch.create("dispatch")
        if broker:
            os.environ["BROKER_URL"] = broker
        settings = Settings.from_env()
        upgrade("dispatch", settings)
        engine = make_engine(settings.database_url("dispatch"))
        began = time.perf_counter()
        poster, region = fill(engine, n, seed)
        print(f"  filled {n:,} lines a side in {time.perf_counter() - began:.1f} s", flush=True)
        app = create_app(settings)
        rt = app.extensions["aidlink"]
        phases = Phases()
        stop = threading.Event()
        poster_thread = threading.Thread(
            target=post_needs, args=(app, poster, region, post_every, stop, phases), daemon=True
        )
        with timed_phases(rt, phases):
            poster_thread.start()
            began = time.perf_counter()
            service.run(rt, items=None, dry_run=False, trigger="manual")
            phases.total = time.perf_counter() - began
            stop.set()
            poster_thread.join(timeout=30)
        with Session(engine) as session:
            phases.proposals = session.scalar(select(func.count()).select_from(Allocation)) or 0
        if broker:
            # The events went to a broker other benchmarks share: leave its queues empty.
            purge(rt.celery, *SERVICES)
        rt.dispose()
        engine.dispose()
        return phases
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if scratch is not None:
            scratch.drop_all()
        remove_tree(tmp)


def report(n: int, backend: str, p: Phases) -> None:
    latencies = sorted(t for t, _ in p.posts)
    statuses: dict[int, int] = {}
    for _, status in p.posts:
        statuses[status] = statuses.get(status, 0) + 1
    print(f"\nN = {n:,} lines a side, {backend}: {p.proposals:,} allocations proposed")
    print(f"  {'phase':<34}{'seconds':>9}  target")
    print(f"  {'read (read_inputs)':<34}{p.read:>9.2f}")
    print(f"  {'solve (matching.match)':<34}{p.solve:>9.2f}")
    longest = max(p.writes, default=0.0)
    print(f"  {'longest write transaction (lock)':<34}{longest:>9.2f}  <= {TARGET_WRITE_SECONDS} s")
    print(f"  {f'write transactions, all {len(p.writes)}':<34}{sum(p.writes):>9.2f}")
    print(f"  {'events relayed (or waited for)':<34}{p.relay:>9.2f}")
    ratio = p.total / p.solve if p.solve else float("inf")
    print(f"  {'whole run':<34}{p.total:>9.2f}  {ratio:.2f}x the solver (<= {TARGET_RUN_RATIO:g}x)")
    if latencies:
        p50 = statistics.median(latencies)
        print(
            f"  needs posted during the run: {len(latencies)}, answered in p50 "
            f"{p50 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
            f"(<= {TARGET_POST_SECONDS * 1000:.0f} ms); statuses {statuses}"
        )
    else:
        print("  no need was posted during the run (it was shorter than --post-every)")


def main(
    sizes: list[int],
    seed: int,
    database_url: str | None,
    post_every: float,
    broker: str | None = None,
) -> int:
    backend = "PostgreSQL" if database_url else "SQLite"
    broker_name = backend_name(broker) if broker else "the embedded SQLite transport"
    print(f"aidlink matching through the service ({backend}, broker {broker_name}), seed {seed}")
    for n in sizes:
        print(f"\ngenerating and filling {n:,} x {n:,} ...", flush=True)
        report(n, backend, measure(n, seed, database_url, post_every, broker))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--through-service",
        action="store_true",
        help="time a whole run as the worker performs it (read, solve, write, events) "
        "on a fresh dispatch database, with needs posted during it",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server URL for --through-service (default: SQLite files)",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="broker URL for --through-service, e.g. redis://127.0.0.1:6379/14 beside "
        "PostgreSQL as docker compose runs them (default: the embedded SQLite transport); "
        "its service queues are purged after each run",
    )
    parser.add_argument(
        "--post-every",
        type=float,
        default=0.2,
        help="seconds between needs posted during a run (default 0.2)",
    )
