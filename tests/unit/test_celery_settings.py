"""The reliability settings of DESIGN.md, on both brokers."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.taskqueue import make_celery


def test_every_service_app_has_the_reliability_settings(tmp_path: Path) -> None:
    app = make_celery("dispatch", Settings.from_env({"AIDLINK_VAR_DIR": str(tmp_path)}))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_time_limit == 300 and conf.task_soft_time_limit == 270
    assert conf.task_default_queue == "dispatch"
    assert [q.name for q in conf.task_queues] == ["dispatch"]
    # SQLite's write lock is shared by every process; they wait for it, not fail.
    assert conf.broker_transport_options["connect_args"] == {"timeout": 30}


def test_redis_visibility_timeout_is_set_in_all_three_places(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "AIDLINK_VAR_DIR": str(tmp_path),
            "BROKER_URL": "redis://127.0.0.1:6379/0",
            "AIDLINK_BROKER_VISIBILITY_TIMEOUT": "7200",
        }
    )
    conf = make_celery("donations", settings).conf
    assert conf.visibility_timeout == 7200
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert conf.result_backend_transport_options["visibility_timeout"] == 7200


def test_event_tasks_show_their_events_not_their_payloads() -> None:
    from shared.outbox import CeleryPublisher

    sent: list[tuple[str, dict[str, object]]] = []
    publisher = CeleryPublisher(lambda task, **options: sent.append((task, options)))
    one = {"id": "e1", "type": "pledge.created", "data": {"lines": ["x" * 1000]}}
    publisher("dispatch", one)
    publisher.many(
        "donations",
        [
            {"id": "e2", "type": "allocation.proposed"},
            {"id": "e3", "type": "allocation.proposed"},
            {"id": "e4", "type": "allocation.cancelled"},
        ],
    )
    (task, options), (batch_task, batch_options) = sent
    assert (task, options["queue"], options["args"]) == ("dispatch.handle_event", "dispatch", [one])
    assert options["argsrepr"] == "[pledge.created e1]"
    assert batch_task == "donations.handle_events"
    assert batch_options["argsrepr"] == (
        "[3 events: allocation.proposed x2, allocation.cancelled x1]"
    )
    assert options["kwargsrepr"] == batch_options["kwargsrepr"] == "{}"
