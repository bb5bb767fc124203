"""The database connection dropped in the middle of transactions, in the workers and
in the services: nothing half-written, every step retried to completion.

On PostgreSQL the connections are really killed (``pg_terminate_backend``) while the
saga runs; on SQLite, which has no connection to kill, a commit fails as a dropped
connection's would (an OperationalError, the transaction rolled back whole).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from services.dispatch.models import Allocation, MatchingRun
from tests.support.faults import (
    CommitFault,
    Saga,
    assert_accounted,
    deliveries_of,
    start_faulty_worker,
    terminating_connections,
)
from tests.support.orgs import count
from tests.support.stack import BACKEND, Stack, eventually


def _tolerant(check: Any) -> Any:
    """A check that treats a killed connection as 'not yet'."""

    def attempt() -> Any:
        try:
            return check()
        except OperationalError:
            return None

    return attempt


def test_commits_failing_in_workers_and_services_are_retried_to_completion(
    stack: Stack,
) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    # Donations' reservations and dispatch's answers to them each fail at COMMIT a
    # few times: the task sees a transient error and runs again.
    start_faulty_worker(
        stack, "donations", {"commit_fault": {"tables": ["reservations"], "times": 3}}
    )
    start_faulty_worker(
        stack, "dispatch", {"commit_fault": {"tables": ["allocations"], "times": 3}}
    )
    saga = Saga.begin(stack)
    saga.submit()
    eventually(saga.supply_known, timeout=60)

    # The coordinator's run fails at the commit that writes its allocations: none of
    # it is kept (no run, no allocation, no event), and the retry with the same key
    # applies it once.
    dispatch = stack.runtime("dispatch")
    fault = CommitFault(dispatch.engine, ["allocations"], times=1)
    key = uuid.uuid4().hex
    body = {"dry_run": False, "items": ["mask", "gloves_exam"]}
    headers = {**saga.chief.headers, "Idempotency-Key": key}
    failed = stack.client().post("/api/v1/matching/runs", json=body, headers=headers)
    assert failed.status_code >= 500
    assert fault.failed == 1
    assert count(dispatch, Allocation) == 0
    # (Runs on the pledges' and needs' own events may have made previews meanwhile.)
    assert count(dispatch, MatchingRun, MatchingRun.trigger == "manual") == 0
    assert dispatch.outbox.backlog() == 0
    retried = stack.client().post("/api/v1/matching/runs", json=body, headers=headers)
    assert retried.status_code == 201, retried.json
    assert retried.json["status"] == "applied"
    assert count(dispatch, Allocation) == len(retried.json["allocations"]) > 0

    assert_accounted(saga)
    assert count(dispatch, MatchingRun, MatchingRun.trigger == "manual") == 1
    # The workers' failed commits were deliveries that ran again.
    for service in ("donations", "dispatch"):
        assert sum(n - 1 for n in deliveries_of(stack, service).values()) >= 3, service


@pytest.mark.skipif(
    BACKEND != "servers",
    reason="SQLite has no server connection to kill; the test above drops its commits",
)
def test_connections_killed_while_the_saga_runs(stack: Stack) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    saga = Saga.begin(stack)
    with terminating_connections(stack.settings) as killed:
        saga.submit()
        eventually(_tolerant(saga.supply_known), timeout=90)
        saga.match()
        eventually(_tolerant(saga.decided), timeout=90)
    assert killed[0] > 0
    assert_accounted(saga)


@pytest.mark.skipif(
    BACKEND != "servers", reason="SQLite has no server connection to kill or to ping"
)
def test_a_pooled_connection_killed_while_idle_is_replaced_before_use() -> None:
    """The pool pings a connection only after it lay idle (``PING_AFTER_IDLE``): one
    killed meanwhile, as by a server restart, never reaches a caller."""
    import time

    from sqlalchemy import create_engine, text

    from shared.db import PING_AFTER_IDLE, make_engine
    from tests.support.stack import server_urls

    pg_url = server_urls()[0]
    engine = make_engine(pg_url)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            first = conn.execute(text("select pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(text("select pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        time.sleep(PING_AFTER_IDLE + 0.2)
        with engine.connect() as conn:
            second = conn.execute(text("select pg_backend_pid()")).scalar()
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.skipif(
    BACKEND != "servers", reason="SQLite has no server connection to kill or to ping"
)
def test_a_one_row_read_on_a_connection_killed_just_before_is_answered() -> None:
    """``OneRowRead`` runs on a raw pooled connection; one killed a moment before (too
    recently used to be pinged) fails, and the read is made again through SQLAlchemy,
    which replaces the pool's dead connections."""
    from sqlalchemy import column, create_engine, literal, select, text

    from shared.db import OneRowRead, make_engine
    from tests.support.stack import server_urls

    pg_url = server_urls()[0]
    engine = make_engine(pg_url)
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    read = OneRowRead(
        select(literal(7).label("seven"), column("pid")).select_from(
            text("(select pg_backend_pid() as pid) as backend")
        )
    )
    try:
        first = read(engine)
        assert first is not None and first[0] == 7
        with admin.connect() as conn:
            assert conn.execute(
                text("select pg_terminate_backend(:pid)"), {"pid": first[1]}
            ).scalar()
        again = read(engine)
        assert again is not None and again[0] == 7 and again[1] != first[1]
    finally:
        engine.dispose()
        admin.dispose()


def test_a_one_row_read_that_fails_raises_sqlalchemys_error(stack: Stack) -> None:
    """A failing ``OneRowRead`` raises SQLAlchemy's exception (which the services'
    error handlers know), not the driver's."""
    from sqlalchemy import column, select, table
    from sqlalchemy.exc import DBAPIError

    from shared.db import OneRowRead

    read = OneRowRead(select(column("id")).select_from(table("no_such_table")))
    with pytest.raises(DBAPIError):
        read(stack.runtime("dispatch").read_engine)
