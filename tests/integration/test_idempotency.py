"""Idempotency-Key: a POST sent again with the same key gets the first answer, and the
work is done once, at the gateway and in the services behind it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select

from services.donations.models import Pledge
from services.gateway.models import ApiToken
from tests.support.auth import register
from tests.support.stack import Stack
from tests.support.supply import one_line


def _count(stack: Stack, service: str, model: object) -> int:
    rt = stack.runtime(service)
    with rt.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def test_a_repeated_pledge_is_created_once_and_answered_the_same(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "pledge-2020-01-28-001"}

    first = client.post("/api/v1/pledges", json=one_line(300), headers=headers)
    second = client.post("/api/v1/pledges", json=one_line(300), headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert _count(stack, "donations", Pledge) == 1

    changed = client.post("/api/v1/pledges", json=one_line(301), headers=headers)
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json["errors"]
    assert _count(stack, "donations", Pledge) == 1

    # Keys belong to their caller: another donor's same key is another request.
    other = register(client, kind="foundation")
    theirs = client.post(
        "/api/v1/pledges",
        json=one_line(300),
        headers={**other.headers, "Idempotency-Key": "pledge-2020-01-28-001"},
    )
    assert theirs.status_code == 201
    assert theirs.json["id"] != first.json["id"]
    assert _count(stack, "donations", Pledge) == 2


def test_the_gateways_own_posts_honour_the_key(stack: Stack) -> None:
    client = stack.client()
    hospital = register(client)
    headers = {**hospital.headers, "Idempotency-Key": "token-1"}
    body = {"name": "county feed", "scopes": ["orgs:read"]}

    first = client.post("/api/v1/tokens", json=body, headers=headers)
    second = client.post("/api/v1/tokens", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json["id"] == first.json["id"]
    assert _count(stack, "gateway", ApiToken) == 1
    bad = client.post(
        "/api/v1/tokens", json=body, headers={**hospital.headers, "Idempotency-Key": " "}
    )
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json["errors"]


def test_a_refused_request_is_answered_the_same_again(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "retry-me"}
    refused = client.post(
        "/api/v1/pledges", json={"lines": [], "origin": {"region": "42"}}, headers=headers
    )
    assert refused.status_code == 422
    # A 4xx is an answer too: the same request gets it again, without running.
    again = client.post(
        "/api/v1/pledges", json={"lines": [], "origin": {"region": "42"}}, headers=headers
    )
    assert again.status_code == 422
    assert again.headers.get("Idempotent-Replayed") == "true"


def test_a_request_whose_answer_was_lost_is_never_run_again(stack: Stack) -> None:
    """The work and the key's ``applied`` mark commit together; an answer that could not
    be kept (a failed write, a process that died) does not let a retry run it twice."""
    from datetime import timedelta

    from sqlalchemy import update

    from services.donations.models import messaging
    from shared.db import utcnow

    client = stack.client()
    donor = register(client, kind="foundation")
    keys = messaging.idempotency
    applied = {**donor.headers, "Idempotency-Key": "answer-lost"}
    first = client.post("/api/v1/pledges", json=one_line(300), headers=applied)
    assert first.status_code == 201
    rt = stack.runtime("donations")
    with rt.session_factory() as session:
        row = session.scalars(select(keys).where(keys.key == "answer-lost")).one()
        assert row.applied_at is not None and row.completed_at is not None
    # As if the answer had never been written and the first process had died long ago.
    long_ago = utcnow() - timedelta(minutes=10)
    with rt.unit_of_work() as session:
        session.execute(
            update(keys)
            .where(keys.key == "answer-lost")
            .values(
                status=None, body=None, completed_at=None, created_at=long_ago, applied_at=long_ago
            )
        )
    again = client.post("/api/v1/pledges", json=one_line(300), headers=applied)
    assert again.status_code == 409
    assert again.json["type"].endswith("idempotency-key-applied")
    assert _count(stack, "donations", Pledge) == 1

    # A request that died before committing anything is run again once abandoned.
    refused = {**donor.headers, "Idempotency-Key": "never-applied"}
    bad = client.post("/api/v1/pledges", json=one_line(0), headers=refused)
    assert bad.status_code == 422
    with rt.session_factory() as session:
        row = session.scalars(select(keys).where(keys.key == "never-applied")).one()
        assert row.applied_at is None
    with rt.unit_of_work() as session:
        session.execute(
            update(keys)
            .where(keys.key == "never-applied")
            .values(status=None, body=None, completed_at=None, created_at=long_ago)
        )
    retried = client.post("/api/v1/pledges", json=one_line(0), headers=refused)
    assert retried.status_code == 422
    assert "Idempotent-Replayed" not in retried.headers


def test_a_request_held_past_the_takeover_window_and_retried_is_applied_once(
    stack: Stack, monkeypatch: Any
) -> None:
    """A request still running when a retry takes its key over (its process looked
    dead): the retry runs, and the first one, when it comes to commit, finds the key no
    longer its own and rolls its work back."""
    import threading
    import time
    from datetime import timedelta

    import shared.idempotency as idempotency
    from services.donations.pledges import service as pledges

    monkeypatch.setattr(idempotency, "ABANDONED_AFTER", timedelta(seconds=0.3))
    entered, release = threading.Event(), threading.Event()
    original = pledges.create_pledge
    calls: list[int] = []

    def held(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            # The first request stops here, before it has written anything.
            entered.set()
            assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(pledges, "create_pledge", held)
    donor = register(stack.client(), kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "slow-pledge"}
    answers: dict[str, Any] = {}

    def first() -> None:
        answers["first"] = stack.client().post(
            "/api/v1/pledges", json=one_line(300), headers=headers
        )

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(30)
    time.sleep(0.5)  # past the (shortened) window: the first looks abandoned
    retry = stack.client().post("/api/v1/pledges", json=one_line(300), headers=headers)
    assert retry.status_code == 201, retry.json
    release.set()
    thread.join(30)
    assert answers["first"].status_code == 409, answers["first"].json
    assert answers["first"].json["type"].endswith("/idempotency-key-taken-over")
    assert _count(stack, "donations", Pledge) == 1
    # The key keeps the retry's answer.
    again = stack.client().post("/api/v1/pledges", json=one_line(300), headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == retry.json["id"]


class _DropsConnection:
    """The first statement starting with each of ``prefixes`` finds its connection
    dead, as after a server restart or ``pg_terminate_backend``: the DBAPI raises, and
    SQLAlchemy takes it for a disconnect and throws the connection away."""

    def __init__(self, engine: Any, *prefixes: str) -> None:
        self.left = [p.lower() for p in prefixes]
        self.dropped: list[str] = []
        self.error = engine.dialect.loaded_dbapi.OperationalError
        event.listen(engine, "before_cursor_execute", self._execute)
        event.listen(engine, "handle_error", self._disconnect)

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lowered = " ".join(statement.lower().split())
        for prefix in self.left:
            if lowered.startswith(prefix):
                self.left.remove(prefix)
                self.dropped.append(prefix)
                raise self.error("server closed the connection unexpectedly (injected)")

    def _disconnect(self, context: Any) -> None:
        if "(injected)" in str(context.original_exception):
            context.is_disconnect = True


def test_a_request_failing_on_a_dead_connection_can_be_retried_at_once(stack: Stack) -> None:
    """The connection a request's work died on is often dead for forgetting its key
    too: forgetting is tried again on a fresh connection, so the client's retry runs
    at once instead of being told the request is in progress until it is abandoned."""
    client = stack.client()
    donor = register(client, kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "dead-connection"}
    fault = _DropsConnection(
        stack.runtime("donations").engine, "insert into pledges", "delete from idempotency_keys"
    )

    failed = client.post("/api/v1/pledges", json=one_line(300), headers=headers)
    assert failed.status_code >= 500
    assert fault.dropped == ["insert into pledges", "delete from idempotency_keys"]
    assert _count(stack, "donations", Pledge) == 0

    retried = client.post("/api/v1/pledges", json=one_line(300), headers=headers)
    assert retried.status_code == 201, retried.json
    assert "Idempotent-Replayed" not in retried.headers
    assert _count(stack, "donations", Pledge) == 1
