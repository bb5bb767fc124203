"""How fast does the event pipeline turn posted needs into reserved allocations?

Measurement A (pipeline): a verified donor's pledges are in the supply read model;
then N needs of one line each are posted through the dispatch service layer, as the
API would, by ``--clients`` clients at once (default one, one need after another),
shared among ``--processes`` posting processes (default one; as many as the dispatch
web server has gunicorn workers, e.g. 2 under ``docker compose``).
Each need.posted asks for matching of its item (debounced); the matcher runs in the
dispatch worker and, with ``AIDLINK_MATCHING_AUTO_APPROVE``, proposes its
allocations; ``allocation.proposed`` goes to the donations worker, which reserves the
quantity with one conditional UPDATE and answers ``reservation.accepted``; the
dispatch worker marks the allocation reserved. The clock runs from the first need
posted until all N allocations are reserved, on a warm, quiet system, as the no-op
reference is measured with a warm-up task: one need (of an organisation of its own) is
posted and reserved first, so that each worker has taken every step of the saga once;
the clock starts once the last matching run is over and its debounce has passed (as
when needs come after a quiet spell; started at once, the first needs waited up to a
debounce for a run the set-up had caused, a third of the time measured at 300 needs).
Real worker processes (prefork, concurrency 1), real broker.

Measurement B (reference): N ``bench.noop`` tasks on the same broker, each committing
one UPDATE (bench/event_hop.py's no-op worker).

It prints allocations per second next to no-op tasks per second and their ratio
(target at least 0.5). It prints figures only and never fails on them. ``--timeline``
prints, for each measurement, when the needs were posted and when each matching run
began and its allocations were last reserved (the services' own timestamps): where the
measured second went.

The catch-up (shared/catchup.py) is measured in the same run: measurement A runs
``--repeat`` times with it off (``AIDLINK_EVENT_CATCH_UP=0``: outbox rows do not track
their subscribers, nothing is asked) and as many times with it on, alternately, each
on fresh databases, and prints the medians and the overhead (target under 10%). With
it on, the producers ask their subscribers every ``--catch-up-every`` seconds (1 s by
default: thirty times as often as production's default of a round every 30 s), as
beat would.

    .venv/bin/python -m bench.pipeline --needs 500
    .venv/bin/python -m bench.pipeline --needs 600 --clients 8 --repeat 3 \\
        --broker redis://127.0.0.1:6379/14 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.pipeline --needs 300 --clients 8 --broker redis://127.0.0.1:6379/14 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.pipeline --needs 2000 --broker redis://127.0.0.1:6379/14 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from bench.event_hop import (
    BenchError,
    Result,
    ScratchDatabases,
    backend_name,
    measure_noop,
    no_interrupts,
    polling_interval,
    purge,
    redacted,
    refuse_other_consumers,
    remove_tree,
    start_worker,
    wait_until,
    worker_environ,
)
from shared.config import SERVICES, Settings
from shared.migrations import upgrade
from shared.taskqueue import prepare_broker

TARGET_RATIO = 0.5
NEED_QUANTITY = 10
PLEDGES = 20


def _verified_orgs(settings: Settings, donor: uuid.UUID, recipients: list[uuid.UUID]) -> None:
    """The organisations as the gateway's org.verified would have left them in each
    service's read model (the gateway is not part of this pipeline)."""
    from services.dispatch.models import Organisation as DispatchOrg
    from services.donations.models import Organisation as DonationsOrg

    for service, model in (("donations", DonationsOrg), ("dispatch", DispatchOrg)):
        engine = create_engine(settings.database_url(service))
        with engine.begin() as conn:
            rows = [
                {"id": donor, "name": "Bench Foundation", "kind": "foundation", "region": "4403"}
            ] + [
                {"id": r, "name": f"Bench Hospital {i}", "kind": "hospital", "region": "420103"}
                for i, r in enumerate(recipients)
            ]
            conn.execute(
                model.__table__.insert(),  # type: ignore[attr-defined]
                [{**row, "status": "verified", "source_version": 1} for row in rows],
            )
        engine.dispose()


def _post_need(dispatch: Any, recipients: list[uuid.UUID], i: int) -> None:
    """Need ``i``, posted through the service layer as the API posts it."""
    from services.dispatch.needs import service as needs

    rt = dispatch.extensions["aidlink"]
    with dispatch.app_context(), rt.unit_of_work() as session:
        needs.create_need(
            session,
            rt.outbox,
            org_id=recipients[i % len(recipients)],
            org_verified=True,
            data={
                "lines": [
                    {
                        "item": "mask",
                        "quantity": str(NEED_QUANTITY),
                        "unit": "piece",
                        "urgency": "high",
                    }
                ],
                "location": {"region": "420103", "address": f"ward {i}"},
            },
        )


def _poster(
    settings: Settings,
    recipients: list[uuid.UUID],
    mine: list[int],
    threads: int,
    ready: Any,
    go: Any,
) -> None:
    """One posting process (a web server's worker): its own app and connections, its
    share of the needs posted by ``threads`` clients once the benchmark says go."""
    from services.dispatch.app import create_app as create_dispatch

    dispatch = create_dispatch(settings.with_overrides(outbox_relay="background"))
    ready.set()
    go.wait()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda i: _post_need(dispatch, recipients, i), mine))
    dispatch.extensions["aidlink"].dispose()  # the relay thread sends what is left


class _Posters:
    """``processes`` posting processes sharing ``clients`` clients and ``n`` needs,
    started and made ready (apps built, connections open) before the clock starts."""

    def __init__(
        self,
        settings: Settings,
        recipients: list[uuid.UUID],
        n: int,
        clients: int,
        processes: int,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.go_event = context.Event()
        self.procs = []
        readies = []
        for k in range(processes):
            ready = context.Event()
            threads = max(1, clients // processes + (1 if k < clients % processes else 0))
            proc = context.Process(
                target=_poster,
                args=(settings, recipients, list(range(k, n, processes)), threads, ready),
                kwargs={"go": self.go_event},
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            readies.append(ready)
        for ready, proc in zip(readies, self.procs, strict=True):
            while not ready.wait(0.5):
                if not proc.is_alive():
                    raise BenchError(f"a posting process exited with {proc.exitcode}")

    def go(self) -> float:
        start = time.perf_counter()
        self.go_event.set()
        return start

    def wait(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode != 0:
                raise BenchError(f"a posting process ended with {proc.exitcode}")
        return time.perf_counter()


def measure_pipeline(
    settings: Settings,
    env: dict[str, str],
    tmp: Path,
    n: int,
    timeout: float,
    clients: int = 1,
    loglevel: str = "WARNING",
    catch_up_every: float | None = None,
    processes: int = 1,
    concurrency: int = 1,
    timeline: bool = False,
) -> tuple[Result, dict[str, int]]:
    from services.dispatch.app import create_app as create_dispatch
    from services.dispatch.models import Allocation, MatchingLock, MatchingRun, Need, SupplyLine
    from services.donations.app import create_app as create_donations
    from services.donations.pledges.service import create_pledge
    from shared.db import utcnow

    donor = uuid.uuid4()
    recipients = [uuid.uuid4() for _ in range(max(1, n // 10))]
    warm_up = uuid.uuid4()
    _verified_orgs(settings, donor, [*recipients, warm_up])
    donations = create_donations(settings)
    # The needs are posted as the dispatch web servers take them (the Procfile's
    # settings: events handed to a relay thread); the workers relay inline.
    dispatch = create_dispatch(settings.with_overrides(outbox_relay="background"))
    donations_rt = donations.extensions["aidlink"]
    dispatch_rt = dispatch.extensions["aidlink"]
    reader = create_engine(settings.database_url("dispatch"))

    def count(query: object) -> int:
        with reader.connect() as conn:
            return int(conn.scalar(query) or 0)  # type: ignore[call-overload]

    stop_asking = threading.Event()
    measured = Allocation.recipient_org_id != warm_up
    # Done when the needs' whole quantity is reserved (a need split between two pledges
    # has two allocations: a count of them would end early).
    reserved = (
        select(func.coalesce(func.sum(Allocation.quantity), 0))
        .select_from(Allocation)
        .where(Allocation.status == "reserved", measured)
    )
    warm = select(func.count()).select_from(Allocation).where(Allocation.status == "reserved")
    supplied = select(func.count()).select_from(SupplyLine)
    refuse_other_consumers(dispatch_rt.celery)
    workers = [
        start_worker(
            "donations", "services.donations.worker", "donations", env, tmp, loglevel, concurrency
        ),
        start_worker(
            "dispatch", "services.dispatch.worker", "dispatch", env, tmp, loglevel, concurrency
        ),
    ]
    try:
        # Whole needs in each pledge (and the warm-up's), so that no need is split.
        per_pledge = -(-(n + 1) // PLEDGES) * NEED_QUANTITY
        with donations.app_context():
            for _ in range(PLEDGES):
                with donations_rt.unit_of_work() as session:
                    create_pledge(
                        session,
                        donations_rt.outbox,
                        org_id=donor,
                        data={
                            "lines": [
                                {"item": "mask", "quantity": str(per_pledge), "unit": "piece"}
                            ],
                            "origin": {"region": "4403", "address": "Shenzhen warehouse"},
                        },
                    )
        wait_until(
            lambda: count(supplied),
            PLEDGES,
            timeout=timeout,
            worker=workers[1],
            what="the pledges in dispatch's supply read model",
        )
        _post_need(dispatch, [warm_up], 0)
        wait_until(
            lambda: count(warm), 1, timeout=timeout, worker=workers[1], what="the warm-up need"
        )

        def quiet() -> int:
            """1 once no run of the item is asked for or under way and the last began a
            debounce ago (the lock row exists: the pledges asked for a run)."""
            with reader.connect() as conn:
                lock = conn.execute(
                    select(
                        MatchingLock.holder, MatchingLock.requested_at, MatchingLock.last_started_at
                    ).where(MatchingLock.item == "mask")
                ).first()
            if lock is None or lock.holder is not None or lock.last_started_at is None:
                return 0
            if lock.requested_at is not None and lock.requested_at > lock.last_started_at:
                return 0
            since = (utcnow() - lock.last_started_at).total_seconds()
            return int(since >= settings.matching_debounce)

        wait_until(
            quiet,
            1,
            timeout=timeout,
            worker=workers[1],
            what="the last matching run to end and its debounce to pass",
        )

        def post(i: int) -> None:
            _post_need(dispatch, recipients, i)

        if catch_up_every:
            # Beat's rounds: each producer asks its subscribers what they lack.
            def ask() -> None:
                while not stop_asking.wait(catch_up_every):
                    for rt in (donations_rt, dispatch_rt):
                        with contextlib.suppress(Exception):
                            rt.catch_up.ask()

            threading.Thread(target=ask, name="catch-up", daemon=True).start()
        if processes > 1:
            posters = _Posters(settings, recipients, n, clients, processes)
            began_at = utcnow()
            start = posters.go()
            posted = posters.wait(timeout)
        else:
            began_at = utcnow()
            start = time.perf_counter()
            # Recipients post at once, each need in its own transaction, as through the API.
            with ThreadPoolExecutor(max_workers=clients) as pool:
                list(pool.map(post, range(n)))
            posted = time.perf_counter()

        def done() -> int:
            for worker in workers:
                worker.check_alive()
            return count(reserved)

        finished = wait_until(
            done,
            n * NEED_QUANTITY,
            timeout=timeout,
            worker=workers[0],
            what="the needs' quantity reserved",
        )
        with reader.connect() as conn:
            statuses = {
                str(status): int(k)
                for status, k in conn.execute(
                    select(Allocation.status, func.count())
                    .where(measured)
                    .group_by(Allocation.status)
                )
            }
            if timeline:
                _print_timeline(conn, began_at, Need, MatchingRun, Allocation, measured)
    finally:
        stop_asking.set()
        with no_interrupts():
            for worker in workers:
                worker.stop()
            with contextlib.suppress(Exception):
                purge(dispatch_rt.celery, *SERVICES)
            reader.dispose()
            donations_rt.dispose()
            dispatch_rt.dispose()
    return Result("pipeline", n, posted - start, finished - start), statuses


def _print_timeline(
    conn: Any, began_at: Any, need: Any, run: Any, allocation: Any, measured: Any
) -> None:
    """Where the measured second went: when the needs were posted, and each matching
    run's start, its allocations and when the last of them was reserved, in seconds from
    the clock's start (the services' own timestamps)."""

    def at(moment: Any) -> str:
        return f"{(moment - began_at).total_seconds():6.3f}"

    first, last = conn.execute(
        select(func.min(need.created_at), func.max(need.created_at)).where(
            need.created_at >= began_at
        )
    ).one()
    print(f"     needs posted from {at(first)} to {at(last)} s")
    runs = conn.execute(
        select(
            run.created_at,
            func.count(allocation.id),
            func.max(allocation.updated_at),
        )
        .join(allocation, allocation.run_id == run.id)
        .where(run.created_at >= began_at, measured)
        .group_by(run.id, run.created_at)
        .order_by(run.created_at)
    )
    for started, count, reserved in runs:
        print(
            f"     run at {at(started)} s: {count:4d} allocations, "
            f"last reserved at {at(reserved)} s"
        )


def _databases(
    args: argparse.Namespace, root: Path, tag: str, catch_up: bool, scratch: Any
) -> tuple[Settings, dict[str, str], Path]:
    """Fresh databases (and, embedded, a fresh broker file) for one measurement."""
    tmp = root / tag
    tmp.mkdir()
    environ = {
        "AIDLINK_VAR_DIR": str(tmp),
        "AIDLINK_LOG_LEVEL": "WARNING",
        "AIDLINK_MATCHING_AUTO_APPROVE": "1",
        "AIDLINK_MATCHING_DEBOUNCE": str(args.debounce),
        "AIDLINK_EVENT_CATCH_UP": "1" if catch_up else "0",
        # Rounds every tenth of the bound: the workers continue a full round at once.
        "AIDLINK_EVENT_DELIVERY_BOUND": str(10 * args.catch_up_every),
    }
    if args.broker:
        environ["BROKER_URL"] = args.broker
    if scratch is not None:
        for svc in SERVICES:
            environ[f"{svc.upper()}_DATABASE_URL"] = scratch.create(f"{svc}_{tag}")
    settings = Settings.from_env(environ)
    prepare_broker(settings)
    for svc in SERVICES:
        upgrade(svc, settings)
    return settings, worker_environ(environ), tmp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--needs", type=int, default=500)
    parser.add_argument("--broker", help="broker URL (default: the embedded SQLite transport)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; scratch databases are created and dropped on it",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--clients", type=int, default=1, help="needs posted by this many clients at once"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="posting processes the clients are shared among (as a web server's workers)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="measurements of the pipeline with the catch-up off, and as many with it on",
    )
    parser.add_argument(
        "--catch-up-every",
        type=float,
        default=1.0,
        help="seconds between the catch-up's rounds when it is on",
    )
    parser.add_argument(
        "--debounce",
        type=float,
        default=0.5,
        help="seconds between matching runs asked for by changes "
        "(AIDLINK_MATCHING_DEBOUNCE; the service's default is 2)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="processes of each worker, the pipeline's and the no-op's alike "
        "(docker-compose.yml runs 2)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print each measurement's timeline: the needs posted, each matching run's "
        "start and its allocations' last reservation",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the workers' logs (at INFO: every task with its duration) and say where",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.debounce < 0:
        parser.error(f"--debounce must not be negative, got {args.debounce:g}")
    loglevel = "INFO" if args.keep_logs else "WARNING"
    runs: dict[bool, list[Result]] = {False: [], True: []}
    statuses: dict[bool, list[dict[str, int]]] = {False: [], True: []}
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="aidlink-pipeline-"))
        if not args.keep_logs:
            stack.callback(remove_tree, root)
        scratch = None
        if args.database_url:
            scratch = ScratchDatabases(args.database_url)
            stack.callback(scratch.drop_all)
        try:
            for round_ in range(args.repeat):
                for catch_up in (False, True):
                    tag = f"{'on' if catch_up else 'off'}{round_ + 1}"
                    settings, env, tmp = _databases(args, root, tag, catch_up, scratch)
                    state = "on" if catch_up else "off"
                    print(f"pipeline, catch-up {state}: {args.needs} needs ...", flush=True)
                    result, found = measure_pipeline(
                        settings,
                        env,
                        tmp,
                        args.needs,
                        args.timeout,
                        args.clients,
                        loglevel,
                        catch_up_every=args.catch_up_every if catch_up else None,
                        processes=args.processes,
                        concurrency=args.concurrency,
                        timeline=args.timeline,
                    )
                    runs[catch_up].append(result)
                    statuses[catch_up].append(found)
            settings, env, tmp = _databases(args, root, "noop", False, scratch)
            counter_url = (
                scratch.create("noop") if scratch is not None else f"sqlite:///{tmp / 'noop.db'}"
            )
            print(f"no-op reference: {args.needs} tasks ...", flush=True)
            noop = measure_noop(
                settings, env, tmp, counter_url, args.needs, args.timeout, args.concurrency
            )
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    interval = polling_interval(settings)
    off = statistics.median(r.throughput for r in runs[False])
    on = statistics.median(r.throughput for r in runs[True])
    print()
    print("aidlink event-pipeline benchmark")
    print(f"  broker     {backend_name(settings.broker_url)}  ({redacted(settings.broker_url)})")
    print(f"  databases  {backend_name(settings.database_url('dispatch'))}")
    print(f"  matching   runs asked for by changes at least {args.debounce:g} s apart")
    print(
        "  workers    donations and dispatch (and the no-op), prefork, "
        f"concurrency {args.concurrency}"
    )
    print()
    print("A. needs posted -> matching (auto-approved) -> allocation.proposed -> reservation")
    print("   -> reservation.accepted -> allocation reserved")
    for catch_up in (False, True):
        label = (
            f"catch-up on (a round every {args.catch_up_every:g} s)" if catch_up else "catch-up off"
        )
        print(f"   {label}")
        for result, found in zip(runs[catch_up], statuses[catch_up], strict=True):
            print(
                f"     posted in {result.sent_seconds:6.3f} s by {args.clients} client(s) "
                f"in {args.processes} process(es), "
                f"reserved in {result.done_seconds:6.3f} s: {result.throughput:7.1f} "
                f"allocations/s  {found}"
            )
    print(f"   median, catch-up off  {off:8.1f} allocations/s")
    print(f"   median, catch-up on   {on:8.1f} allocations/s")
    print(f"   overhead of the catch-up  {100 * (off - on) / off:5.1f} %   (target < 10 %)")
    print()
    print("B. no-op tasks, each one UPDATE")
    print(f"   throughput   {noop.throughput:8.1f} tasks/s")
    print()
    print(
        f"ratio pipeline/noop  {off / noop.throughput:.2f} (catch-up off), "
        f"{on / noop.throughput:.2f} (on)   (target >= {TARGET_RATIO:.2f})"
    )
    if args.keep_logs:
        print(f"worker logs: {root}/*/worker-*.log")
    if interval is not None:
        print(
            f"note: the embedded transport polls every {interval:g} s; figures on it measure "
            "that interval more than the work"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
