"""Lists at any depth: keyset pages by (created_at, id) take every row once, ties of
the same moment included, with a row comparison an index serves; look-ups by id take
more ids than the database binds in one statement."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from services.dispatch.models import Need, Organisation
from services.dispatch.transparency.trace import org_names
from shared.pagination import paginate
from tests.support.stack import Stack


def test_needs_page_by_time_and_id_ties_included(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    moment = datetime(2020, 2, 3, 8, tzinfo=UTC)
    ids = sorted(uuid.uuid4() for _ in range(7))
    with rt.unit_of_work() as session:
        session.execute(
            insert(Need),
            [
                {
                    "id": need_id,
                    "org_id": uuid.uuid4(),
                    "status": "open",
                    "region": "420103",
                    "expires_at": moment + timedelta(days=14),
                    # Three made at the same moment, then one a second.
                    "created_at": moment + timedelta(seconds=max(0, n - 2)),
                    "updated_at": moment,
                    "version": 1,
                }
                for n, need_id in enumerate(ids)
            ],
        )
    seen: list[uuid.UUID] = []
    cursor = None
    with rt.session_factory() as session:
        while True:
            page = paginate(session, select(Need), Need, cursor=cursor, limit=2)
            seen.extend(need.id for need in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == ids


def test_names_of_more_organisations_than_one_statement_binds(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    known = {uuid.uuid4(): f"Hospital {n}" for n in range(3)}
    with rt.unit_of_work() as session:
        session.execute(
            insert(Organisation),
            [
                {"id": org_id, "name": name, "kind": "hospital", "status": "verified"}
                | {"region": "420103", "source_version": 1}
                for org_id, name in known.items()
            ],
        )
    # More than PostgreSQL's 65,535 bound parameters and SQLite's 32,766.
    asked = [uuid.uuid4() for _ in range(70_000)] + list(known)
    with rt.session_factory() as session:
        assert org_names(session, asked) == known
