"""Error documents, the merged API document and configuration, without any I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.gateway.openapi import merge_specs
from shared.config import ConfigError, Settings
from shared.errors import Conflict, DomainError, Forbidden, NotFound, RuleBroken
from shared.problems import flatten_errors


def test_nested_validation_messages_flatten_to_field_paths() -> None:
    messages = {
        "name": ["Missing data for required field."],
        "lines": {0: {"quantity": ["Must be positive."]}, 2: {"unit": ["Unknown unit."]}},
        "origin": {"region": ["Not a region code."]},
    }
    assert flatten_errors(messages) == {
        "name": ["Missing data for required field."],
        "lines.0.quantity": ["Must be positive."],
        "lines.2.unit": ["Unknown unit."],
        "origin.region": ["Not a region code."],
    }
    assert flatten_errors(["Invalid JSON body."]) == {"_schema": ["Invalid JSON body."]}


def test_merging_specs_keeps_each_services_paths_and_renames_clashing_schemas() -> None:
    gateway: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "g"},
        "paths": {"/api/v1/orgs": {}},
        "components": {"schemas": {"Problem": {"type": "object"}}},
    }
    org = {"type": "object", "properties": {"name": {"type": "string"}}}
    donations: dict[str, Any] = {
        "paths": {
            "/api/v1/donations/orgs/{id}": {
                "get": {"responses": {"200": {"$ref": "#/components/schemas/Org"}}}
            }
        },
        "components": {"schemas": {"Org": org, "Problem": {"type": "object"}}},
        "tags": [{"name": "donations"}],
    }
    dispatch: dict[str, Any] = {
        "paths": {
            "/api/v1/dispatch/orgs/{id}": {
                "get": {"responses": {"200": {"$ref": "#/components/schemas/Org"}}}
            }
        },
        "components": {"schemas": {"Org": {**org, "required": ["name"]}}},
    }

    merged = merge_specs(gateway, {"donations": donations, "dispatch": dispatch})

    assert set(merged["paths"]) == {
        "/api/v1/orgs",
        "/api/v1/donations/orgs/{id}",
        "/api/v1/dispatch/orgs/{id}",
    }
    schemas = merged["components"]["schemas"]
    # dispatch merges first (sorted), so donations' differing Org is the renamed one.
    assert schemas["Org"]["required"] == ["name"]
    assert schemas["DonationsOrg"] == org
    ref = merged["paths"]["/api/v1/donations/orgs/{id}"]["get"]["responses"]["200"]["$ref"]
    assert ref == "#/components/schemas/DonationsOrg"
    assert merged["tags"] == [{"name": "donations"}]
    assert gateway["components"]["schemas"] == {"Problem": {"type": "object"}}  # untouched


def test_defaults_run_embedded_mode_under_var(tmp_path: Path) -> None:
    settings = Settings.from_env({"AIDLINK_VAR_DIR": str(tmp_path)})
    assert settings.database_url("donations") == f"sqlite:///{tmp_path}/donations.db"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert settings.broker_is_sqlite and not settings.broker_is_redis
    assert settings.service_urls["dispatch"] == "http://127.0.0.1:8002"


def test_production_urls_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DISPATCH_DATABASE_URL": "postgresql+psycopg://aidlink@db/dispatch",
            "BROKER_URL": "redis://redis:6379/0",
            "DONATIONS_URL": "http://donations:8001/",
        }
    )
    assert settings.database_url("dispatch") == "postgresql+psycopg://aidlink@db/dispatch"
    assert settings.broker_is_redis
    assert settings.service_urls["donations"] == "http://donations:8001"
    assert Settings.from_env(settings.to_env()) == settings


def test_malformed_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="AIDLINK_MAX_DELIVERIES"):
        Settings.from_env({"AIDLINK_MAX_DELIVERIES": "many"})
    with pytest.raises(ConfigError, match="AIDLINK_LOG_FORMAT"):
        Settings.from_env({"AIDLINK_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="AIDLINK_TRUSTED_PROXIES must be 0 or more"):
        Settings.from_env({"AIDLINK_TRUSTED_PROXIES": "-1"})
    assert Settings.from_env({"AIDLINK_TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    for size in ("0", "1001"):
        with pytest.raises(ConfigError, match="AIDLINK_EVENT_BATCH_MAX must be between 1 and"):
            Settings.from_env({"AIDLINK_EVENT_BATCH_MAX": size})
    assert Settings.from_env({"AIDLINK_EVENT_BATCH_MAX": "1"}).event_batch_max == 1
    for size in ("0", "-2"):
        with pytest.raises(ConfigError, match="AIDLINK_DB_POOL_SIZE must be at least 1"):
            Settings.from_env({"AIDLINK_DB_POOL_SIZE": size})
    assert Settings.from_env({}).db_pool_size == 20
    assert Settings.from_env({"AIDLINK_DB_POOL_SIZE": "3"}).to_env()["AIDLINK_DB_POOL_SIZE"] == "3"
    with pytest.raises(ConfigError, match="AIDLINK_PASSWORD_HASH_TIME_COST must be at least 1"):
        Settings.from_env({"AIDLINK_PASSWORD_HASH_TIME_COST": "0"})
    with pytest.raises(ConfigError, match="AIDLINK_PASSWORD_HASH_PARALLELISM must be at least"):
        Settings.from_env({"AIDLINK_PASSWORD_HASH_PARALLELISM": "0"})
    with pytest.raises(ConfigError, match=r"AIDLINK_PASSWORD_HASH_MEMORY_KIB must be .*\(32\)"):
        Settings.from_env(
            {"AIDLINK_PASSWORD_HASH_MEMORY_KIB": "16", "AIDLINK_PASSWORD_HASH_PARALLELISM": "4"}
        )
    costly = Settings.from_env(
        {
            "AIDLINK_PASSWORD_HASH_TIME_COST": "3",
            "AIDLINK_PASSWORD_HASH_MEMORY_KIB": "65536",
            "AIDLINK_PASSWORD_HASH_PARALLELISM": "4",
        }
    )
    assert (
        costly.password_hash_time_cost,
        costly.password_hash_memory_kib,
        costly.password_hash_parallelism,
    ) == (3, 65536, 4)
    assert Settings.from_env(costly.to_env()) == costly
    with pytest.raises(ConfigError, match="AIDLINK_PASSWORD_HASH_MEMORY_KIB must be an integer"):
        Settings.from_env({"AIDLINK_PASSWORD_HASH_MEMORY_KIB": "64MiB"})
    with pytest.raises(ConfigError, match="AIDLINK_OUTBOX_RELAY must be 'inline' or"):
        Settings.from_env({"AIDLINK_OUTBOX_RELAY": "later"})
    assert Settings.from_env({}).outbox_relay == "inline"
    assert Settings.from_env({"AIDLINK_OUTBOX_RELAY": "background"}).outbox_relay == "background"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("No matching run 7.", slug="matching-run-not-found"), 404),
        (Forbidden("Only coordinators approve plans."), 403),
        (
            Conflict("The run is applied.", slug="matching-run-not-preview", status_now="applied"),
            409,
        ),
        (RuleBroken("The plan breaks a rule.", errors={"changes.0": ["too much"]}), 422),
    ],
)
def test_domain_errors_answer_as_problem_details(error: DomainError, status: int) -> None:
    """The service layer raises errors that know no HTTP; the app's handler answers
    with the problem document."""
    from flask import Flask

    from shared.problems import install_problem_handlers

    app = Flask("t")
    install_problem_handlers(app)

    @app.get("/x")
    def fail() -> Any:
        raise error

    answer = app.test_client().get("/x")
    assert answer.status_code == status
    assert answer.mimetype == "application/problem+json"
    body: dict[str, Any] = answer.json or {}
    assert body["detail"] == error.detail and body["instance"] == "/x"
    if error.slug:
        assert body["type"].endswith("/" + error.slug)
    assert body.get("errors") == error.errors
    for name, value in error.details.items():
        assert body[name] == value


@pytest.mark.parametrize("invalidated", [True, False])
def test_a_lost_database_connection_answers_503_and_any_other_database_error_500(
    invalidated: bool,
) -> None:
    """A request whose connection died under it (a restart, a failover) is told to try
    again in a moment; other database errors stay unexpected ones."""
    import sqlite3

    from flask import Flask
    from sqlalchemy.exc import OperationalError

    from shared.problems import install_problem_handlers

    app = Flask("t")
    install_problem_handlers(app)

    @app.get("/x")
    def fail() -> Any:
        raise OperationalError(
            "SELECT 1",
            {},
            sqlite3.OperationalError("server closed the connection unexpectedly"),
            connection_invalidated=invalidated,
        )

    answer = app.test_client().get("/x")
    body: dict[str, Any] = answer.json or {}
    if invalidated:
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert body["type"].endswith("/database-connection-lost")
        assert "server closed" not in body["detail"]
    else:
        assert answer.status_code == 500
        assert "Retry-After" not in answer.headers
