"""The public ledger at scale, next to a trivial endpoint of the same service.

For each size (10k and 100k lines by default, 1M with ``--million``): a fresh dispatch
database is filled with pledge lines, need lines and allocations by bulk inserts, their
figures added to the ledger's read model by the code that keeps it
(``totals.count_lines`` and ``totals.add``, as a change's commit does); dispatch is started
under the Procfile's gunicorn settings, and clients on keep-alive connections drive,
for ``--duration`` seconds each: ``/healthz`` (the trivial JSON endpoint), the ledger
without filters, with filters, and with ``If-None-Match``. Printed: p50/p99, requests
per second, the ratio to the trivial endpoint, the answer's size, the server's memory
before and after; then a flows export's rows per second and the server's memory
growth. Figures only: nothing here fails on a timing.

    .venv/bin/python -m bench.ledger
    .venv/bin/python -m bench.ledger --sizes 10000 --duration 5
    .venv/bin/python -m bench.ledger --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from bench.event_hop import ScratchDatabases, remove_tree, worker_environ
from bench.write_path import start_gunicorn
from services.dispatch.models import Allocation, Need, NeedLine, Organisation, SupplyLine
from services.dispatch.transparency import totals
from shared.config import Settings
from shared.db import make_engine
from shared.identity import ANONYMOUS, INTERNAL_HEADER, sign_internal
from shared.migrations import upgrade

ITEMS = ("mask", "gloves_exam", "protective_suit", "goggles", "alcohol_75")
UNITS = {"mask": "piece", "gloves_exam": "pair"}
REGIONS = [f"42{c:02d}{d:02d}" for c in range(1, 11) for d in range(1, 11)]
DAYS = 60
BATCH = 5_000
PORT = 18302


def fill(session_factory: Any, lines: int, seed: int = 7) -> None:
    """``lines`` lines in all: half pledge lines, half need lines, an allocation for
    each need line (reserved, shipped or received), organisations to name them."""
    rng = random.Random(seed)
    donors = [uuid.uuid4() for _ in range(300)]
    recipients = [uuid.uuid4() for _ in range(600)]
    start = datetime(2020, 1, 24, tzinfo=UTC)
    with session_factory() as session, session.begin():
        session.execute(
            insert(Organisation),
            [
                {
                    "id": org,
                    "name": f"{kind} {n}",
                    "kind": kind,
                    "region": rng.choice(REGIONS),
                    "status": "verified",
                    "source_version": 1,
                }
                for kind, orgs in (("foundation", donors), ("hospital", recipients))
                for n, org in enumerate(orgs)
            ],
        )
    half = lines // 2
    for first in range(0, half, BATCH):
        count = min(BATCH, half - first)
        supply: list[dict[str, Any]] = []
        needs: list[dict[str, Any]] = []
        need_lines: list[dict[str, Any]] = []
        allocations: list[dict[str, Any]] = []
        for _ in range(count):
            at = start + timedelta(days=rng.randrange(DAYS), seconds=rng.randrange(86400))
            item = rng.choice(ITEMS)
            quantity = rng.randint(10, 5000)
            pledge_line = uuid.uuid4()
            donor = rng.choice(donors)
            supply.append(
                {
                    "id": pledge_line,
                    "pledge_id": uuid.uuid4(),
                    "donor_org_id": donor,
                    "item": item,
                    "quantity": quantity,
                    "reserved": 0,
                    "shipped": 0,
                    "delivered": 0,
                    "proposed": 0,
                    "status": "available",
                    "pledge_status": "open",
                    "restrictions": {},
                    "anonymous": rng.random() < 0.05,
                    "region": rng.choice(REGIONS),
                    "pledge_version": 1,
                    "synced_at": at,
                    "pledged_at": at,
                }
            )
            need, need_line = uuid.uuid4(), uuid.uuid4()
            recipient = rng.choice(recipients)
            needs.append(
                {
                    "id": need,
                    "org_id": recipient,
                    "status": "partially_allocated",
                    "region": rng.choice(REGIONS),
                    "confirmed_at": at,
                    "expires_at": at + timedelta(days=14),
                    "created_at": at,
                    "updated_at": at,
                    "version": 1,
                }
            )
            given = rng.randint(1, quantity)
            need_lines.append(
                {
                    "id": need_line,
                    "need_id": need,
                    "line_no": 1,
                    "item": item,
                    "standards": [],
                    "quantity": quantity * 2,
                    "entered_quantity": str(quantity * 2),
                    "entered_unit": UNITS.get(item, "piece"),
                    "urgency": "high",
                    "reserved": given,
                    "status": "partially_allocated",
                }
            )
            allocations.append(
                {
                    "id": uuid.uuid4(),
                    "pledge_id": supply[-1]["pledge_id"],
                    "pledge_line_id": pledge_line,
                    "donor_org_id": donor,
                    "donor_anonymous": supply[-1]["anonymous"],
                    "need_id": need,
                    "need_line_id": need_line,
                    "recipient_org_id": recipient,
                    "item": item,
                    "quantity": given,
                    "status": rng.choice(("reserved", "shipped", "delivered")),
                    "reason": {},
                    "created_at": at + timedelta(hours=1),
                    "updated_at": at + timedelta(hours=1),
                    "version": 1,
                }
            )
        with session_factory() as session, session.begin():
            for model, rows in (
                (SupplyLine, supply),
                (Need, needs),
                (NeedLine, need_lines),
                (Allocation, allocations),
            ):
                session.execute(insert(model), rows)
            # What a change does: the rows' figures, counted and added to the read model.
            totals.add(
                session,
                totals.count_lines(
                    session,
                    supply_lines=[r["id"] for r in supply],
                    allocations=[r["id"] for r in allocations],
                ),
            )


@dataclass
class Run:
    label: str
    latencies: list[float]
    seconds: float
    statuses: dict[int, int]
    size: int

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def drive(label: str, path: str, headers: dict[str, str], clients: int, duration: float) -> Run:
    """``clients`` threads, each on one keep-alive connection, for ``duration`` s."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop:
            began = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            mine.append(time.perf_counter() - began)
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if len(sizes) < 5:
                    sizes.append(len(body))
        conn.close()
        with lock:
            latencies.extend(mine)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Run(label, latencies, time.monotonic() - began, statuses, max(sizes or [0]))


def server_rss(pid: int) -> float:
    """Resident memory of the gunicorn master and its workers, MB."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sum(int(x) for x in out.split()) / 1024


def export_rate(headers: dict[str, str]) -> tuple[int, float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
    began = time.perf_counter()
    conn.request("GET", "/api/v1/transparency/export.csv?table=flows", headers=headers)
    response = conn.getresponse()
    rows, size = -1, 0
    while chunk := response.read(64 * 1024):
        rows += chunk.count(b"\n")
        size += len(chunk)
    conn.close()
    return rows, time.perf_counter() - began, size


def measure(args: argparse.Namespace, lines: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="aidlink-bench-ledger-"))
    scratch = ScratchDatabases(args.database_url) if args.database_url else None
    environ = {
        "AIDLINK_VAR_DIR": str(tmp),
        "AIDLINK_LOG_LEVEL": "WARNING",
        "AIDLINK_RATELIMIT_ENABLED": "0",
    }
    server = None
    try:
        if scratch is not None:
            environ["DISPATCH_DATABASE_URL"] = scratch.create("dispatch")
        os.environ.update(environ)
        settings = Settings.from_env()
        upgrade("dispatch", settings)
        engine = make_engine(settings.database_url("dispatch"))
        began = time.monotonic()
        fill(lambda: Session(engine), lines)
        filled = time.monotonic() - began
        with Session(engine) as session:
            keys = totals.rows_read_hint(session)
        engine.dispose()
        server = start_gunicorn(
            "dispatch", "services.dispatch.app:create_app()", PORT, worker_environ(environ), tmp
        )
        server.url = f"http://127.0.0.1:{PORT}"
        server.wait_ready("/healthz")
        token = sign_internal(ANONYMOUS, settings.internal_key, "dispatch", 3600)
        headers = {INTERNAL_HEADER: token}
        ledger = "/api/v1/transparency/ledger"
        first = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        first.request("GET", ledger, headers=headers)
        answer = first.getresponse()
        answer.read()
        etag = answer.getheader("ETag") or ""
        first.close()
        kinds: tuple[tuple[str, str, dict[str, str]], ...] = (
            ("trivial (/healthz)", "/healthz", {}),
            ("ledger, no filter", ledger, {}),
            ("ledger, item and region", f"{ledger}?item=mask&region=4201", {}),
            ("ledger, If-None-Match", ledger, {"If-None-Match": etag}),
        )
        # Every kind of request once under way in every worker thread before memory is
        # read: what a server takes to warm up (its threads' allocator arenas, compiled
        # statements) is not growth.
        for label, path, extra in kinds:
            drive(label, path, {**headers, **extra}, args.clients, 1.0)
        rss_before = server_rss(server.proc.pid)
        runs = []
        for label, path, extra in kinds:
            runs.append(drive(label, path, {**headers, **extra}, args.clients, args.duration))
        rss_after = server_rss(server.proc.pid)
        rows, seconds, size = export_rate(headers)
        rss_export = server_rss(server.proc.pid)
        backend = "PostgreSQL" if scratch else "SQLite"
        print(
            f"\n{lines:,} lines on {backend}: filled in {filled:.1f} s; the read model "
            f"holds {keys:,} rows of totals; {args.clients} clients, {args.duration:g} s each"
        )
        trivial = runs[0].rate
        print(f"{'':<26}{'p50 ms':>8}{'p99 ms':>8}{'req/s':>9}{'ratio':>7}{'bytes':>10}  codes")
        for run in runs:
            print(
                f"{run.label:<26}{run.pct(0.5):>8.1f}{run.pct(0.99):>8.1f}{run.rate:>9.1f}"
                f"{run.rate / trivial:>7.2f}{run.size:>10,}  {run.statuses}"
            )
        total = sum(len(r.latencies) for r in runs)
        print(
            f"server memory: {rss_before:.0f} MB before, {rss_after:.0f} MB after "
            f"{total:,} requests ({rss_after - rss_before:+.1f} MB, "
            f"{(rss_after - rss_before) * 10_000 / max(1, total):+.1f} MB per 10,000)"
        )
        print(
            f"flows export: {rows:,} rows, {size / 1e6:.1f} MB in {seconds:.2f} s "
            f"({rows / seconds:,.0f} rows/s); server memory {rss_export - rss_after:+.1f} MB"
        )
        print(
            "targets (issue 25, at 1M lines): ledger p99 <= 50 ms, >= 0.5 of the trivial "
            "rate, memory growth < 20 MB over 10,000 requests; export >= 50,000 rows/s, "
            "memory growth < 50 MB"
        )
    finally:
        if server is not None:
            server.stop()
        if scratch is not None:
            scratch.drop_all()
        remove_tree(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="lines, comma-separated")
    parser.add_argument("--million", action="store_true", help="add 1,000,000 lines")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million:
        sizes.append(1_000_000)
    print(f"bench.ledger, {date.today().isoformat()}, {os.cpu_count()} cores")
    for lines in sizes:
        measure(args, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
