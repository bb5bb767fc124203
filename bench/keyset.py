"""Lists at any depth: the first page of a million needs next to the 1,000th.

A fresh dispatch database is filled with ``--lines`` needs (1,000,000 by default) by
bulk inserts, three a second (ties, which the id in the order breaks); then the list
coordinators read, ``GET /api/v1/needs`` without filters, is read as its endpoint
reads it (``shared.pagination.paginate`` over ``select(Need)``, ``--limit`` rows a
page): the first page, the ``--page``-th (1,000th by default) and the last, each
``--repeat`` times in turn, from the cursor the page before would have given.
Printed: each page's median and 95th percentile and the ratio of the deep pages to
the first. Target (issue 25): the 1,000th page within 2x of the first on both
backends. Figures only: nothing here fails on a time.

    .venv/bin/python -m bench.keyset
    .venv/bin/python -m bench.keyset --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.keyset --lines 100000 --repeat 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.orm import Session

from bench.event_hop import ScratchDatabases, remove_tree

TARGET_RATIO = 2.0
BATCH = 10_000


def fill(engine: Engine, lines: int) -> float:
    """``lines`` needs by bulk inserts; returns the seconds it took."""
    from services.dispatch.models import Need

    start = time.perf_counter()
    moment = datetime(2020, 1, 24, tzinfo=UTC)
    orgs = [uuid.uuid4() for _ in range(900)]
    with Session(engine) as session:
        for first in range(0, lines, BATCH):
            rows = []
            for n in range(first, min(lines, first + BATCH)):
                # Three needs a second: ties, which the id in the order breaks.
                made = moment + timedelta(seconds=n // 3)
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "org_id": orgs[n % len(orgs)],
                        "status": "open",
                        "region": "420103",
                        "expires_at": made + timedelta(days=14),
                        "confirmed_at": made,
                        "created_at": made,
                        "updated_at": made,
                        "version": 1,
                    }
                )
            session.execute(insert(Need), rows)
            session.commit()
            done = min(lines, first + BATCH)
            if done % (BATCH * 20) == 0 or done == lines:
                print(f"  {done:,} needs", flush=True)
    return time.perf_counter() - start


def cursor_at(session: Session, offset: int) -> str | None:
    """The cursor the page ending at row ``offset`` gives (None for the first page)."""
    from services.dispatch.models import Need
    from shared.pagination import _encode

    if offset <= 0:
        return None
    row = session.execute(
        select(Need.created_at, Need.id)
        .order_by(Need.created_at, Need.id)
        .offset(offset - 1)
        .limit(1)
    ).one()
    return _encode(row[0], row[1])


def time_page(engine: Engine, cursor: str | None, limit: int) -> tuple[float, int]:
    from services.dispatch.models import Need
    from shared.pagination import paginate

    with Session(engine) as session:
        start = time.perf_counter()
        page = paginate(session, select(Need), Need, cursor=cursor, limit=limit)
        seconds = time.perf_counter() - start
    return seconds, len(page["items"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keyset", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=50, help="rows a page (the API's default)")
    parser.add_argument("--page", type=int, default=1_000, help="the deep page timed")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a scratch database is created and dropped on it",
    )
    args = parser.parse_args(argv)
    if args.page * args.limit > args.lines:
        parser.error(f"--page {args.page} of {args.limit} rows needs at least that many --lines")
    tmp = Path(tempfile.mkdtemp(prefix="aidlink-keyset-"))
    scratch = ScratchDatabases(args.database_url) if args.database_url else None
    try:
        environ = {"AIDLINK_VAR_DIR": str(tmp)}
        if scratch is not None:
            environ["DISPATCH_DATABASE_URL"] = scratch.create("dispatch")
        os.environ.update(environ)
        from shared.config import Settings
        from shared.migrations import upgrade

        settings = Settings.from_env(environ)
        upgrade("dispatch", settings)
        engine = create_engine(settings.database_url("dispatch"))
        backend = "PostgreSQL" if scratch else "SQLite"
        print(f"filling {args.lines:,} needs ({backend}) ...", flush=True)
        filled = fill(engine, args.lines)
        if scratch is not None:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE needs")
        pages = {"first": 1, f"page {args.page:,}": args.page}
        last = -(-args.lines // args.limit)
        pages[f"last (page {last:,})"] = last
        with Session(engine) as session:
            cursors = {
                label: cursor_at(session, (page - 1) * args.limit) for label, page in pages.items()
            }
        times: dict[str, list[float]] = {label: [] for label in pages}
        rows: dict[str, int] = {}
        for label in pages:  # warm-up: each page read once, not timed
            time_page(engine, cursors[label], args.limit)
        for _ in range(args.repeat):
            for label in pages:
                seconds, found = time_page(engine, cursors[label], args.limit)
                times[label].append(seconds)
                rows[label] = found
        engine.dispose()
    finally:
        if scratch is not None:
            scratch.drop_all()
        remove_tree(tmp)
    first = statistics.median(times["first"])
    print()
    print(f"keyset pages of {args.lines:,} needs on {backend} (filled in {filled:.0f} s),")
    print(f"{args.limit} rows a page, {args.repeat} reads of each, in turn")
    print(f"  {'page':<22}{'rows':>6}{'median ms':>11}{'p95 ms':>9}{'x first':>9}")
    for label in pages:
        ordered = sorted(times[label])
        median = statistics.median(ordered)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(
            f"  {label:<22}{rows[label]:>6}{median * 1000:>11.2f}{p95 * 1000:>9.2f}"
            f"{median / first:>9.2f}"
        )
    print(f"target (issue 25): the {args.page:,}th page within {TARGET_RATIO:g}x of the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
