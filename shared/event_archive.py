"""Retention of the event tables: the outbox and the inbox do not grow without bound.

Once a day's events are older than ``AIDLINK_EVENT_RETENTION_DAYS`` they are written
to gzipped JSON-lines files under ``AIDLINK_EVENT_ARCHIVE_DIR/<service>/`` and deleted:
outbox rows that every subscriber has confirmed (one that a subscriber still lacks is
kept, however old, so the catch-up can still send it), and inbox rows. Delivery
counts of that age are deleted without a copy: they served to set aside an event that
kept failing, and to tell a first delivery (which the inbox need not be asked about)
from a copy; a copy that comes after its count is gone is taken for a first delivery,
and its inbox row, still there, makes it a duplicate all the same. Dead letters stay
until an operator deals with them, and each aggregate's last applied version stays, so
that an event older than the state it would change is still recognised as stale after
its inbox row is gone.

The retention must be longer than any copy of an event may linger in a queue (a
subscriber away that long); within it, a copy that comes again finds its inbox row.

A file is written (and synced) before its rows are deleted; a crash between the two
writes them again in the next run, so an event may appear in two files: its id
tells the copies apart.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import utcnow

log = logging.getLogger(__name__)

BATCH = 5000


def archive_events(
    *,
    service: str,
    models: Any,
    session_factory: sessionmaker[Session],
    retention_days: float,
    directory: Path,
    now: datetime | None = None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Archive and delete what is past the retention; returns rows removed per table."""
    if retention_days <= 0:
        return {}
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    folder = directory / service
    outbox = models.outbox
    inbox = models.inbox
    removed = {
        "outbox": _archive(
            session_factory,
            outbox,
            (
                outbox.published_at.is_not(None),
                outbox.published_at < cutoff,
                outbox.awaiting.is_(None),
            ),
            (outbox.created_at, outbox.id),
            key=outbox.id,
            folder=folder,
            batch=batch,
        ),
        "inbox": _archive(
            session_factory,
            inbox,
            (inbox.received_at < cutoff,),
            (inbox.received_at, inbox.event_id),
            key=inbox.event_id,
            folder=folder,
            batch=batch,
        ),
    }
    deliveries = models.deliveries
    gone = 0
    while True:
        with session_factory() as session, session.begin():
            ids = list(
                session.scalars(
                    select(deliveries.event_id)
                    .where(deliveries.last_attempt_at < cutoff)
                    .limit(batch)
                )
            )
            if ids:
                session.execute(
                    delete(deliveries)
                    .where(deliveries.event_id.in_(ids))
                    .execution_options(synchronize_session=False)
                )
        gone += len(ids)
        if len(ids) < batch:
            break
    removed["deliveries"] = gone
    if any(removed.values()):
        log.info("archived %s's events older than %s: %s", service, cutoff.isoformat(), removed)
    return removed


def _archive(
    session_factory: sessionmaker[Session],
    model: Any,
    conditions: tuple[Any, ...],
    order: tuple[Any, ...],
    *,
    key: Any,
    folder: Path,
    batch: int,
) -> int:
    table = model.__table__
    columns = [column.name for column in table.columns]
    removed = 0
    while True:
        with session_factory() as session, session.begin():
            rows = session.execute(
                select(*[table.c[name] for name in columns])
                .where(*conditions)
                .order_by(*order)
                .limit(batch)
            ).all()
            if not rows:
                break
            records = [dict(zip(columns, row, strict=True)) for row in rows]
            _write(folder, table.name, records)
            ids = [getattr(row, key.key) for row in rows]
            for start in range(0, len(ids), 500):
                session.execute(
                    delete(model)
                    .where(key.in_(ids[start : start + 500]), *conditions)
                    .execution_options(synchronize_session=False)
                )
        removed += len(rows)
        if len(rows) < batch:
            break
    return removed


def _write(folder: Path, name: str, records: list[dict[str, Any]]) -> Path:
    """One file per batch, named for its first row's time and last row's id, written
    under a temporary name and renamed once synced."""
    folder.mkdir(parents=True, exist_ok=True)
    first = records[0]
    stamp = (
        next((value for value in first.values() if isinstance(value, datetime)), None) or utcnow()
    )
    last_id = next((value for value in records[-1].values() if isinstance(value, uuid.UUID)), None)
    suffix = last_id.hex[:12] if last_id else uuid.uuid4().hex[:12]
    path = folder / f"{name}-{stamp:%Y%m%dT%H%M%S}-{suffix}.jsonl.gz"
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as zipped:
            for record in records:
                zipped.write(json.dumps(record, default=_json_default).encode() + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot archive a {type(value).__name__}")


def read_archive(folder: Path, name: str) -> list[dict[str, Any]]:
    """Every record archived from table ``name`` in ``folder`` (for operators and tests)."""
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob(f"{name}-*.jsonl.gz")):
        with gzip.open(path, "rt") as lines:
            records.extend(json.loads(line) for line in lines if line.strip())
    return records
