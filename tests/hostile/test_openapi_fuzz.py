"""Schemathesis against the gateway's OpenAPI document, as each role: no 5xx, and every
response (status, content type, headers, body) as the document says.

The suite's pass is deterministic and small; ``make fuzz`` runs the same tests with a
fresh random seed (``AIDLINK_FUZZ_SEED``, printed so a finding can be replayed) and
more examples per operation (``AIDLINK_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hyp_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.support.auth import Account, admin, coordinator, login, verified
from tests.support.stack import Stack, backend_settings, build_stack


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with backend_settings(tmp_path_factory.mktemp("fuzz")) as s, build_stack(s) as stack:
        yield stack


@pytest.fixture(scope="module")
def people(fuzz_stack: Stack) -> dict[str, Account]:
    client = fuzz_stack.client()
    boss = admin(fuzz_stack.apps["gateway"], client)
    return {
        "admin": boss,
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation", region="4403"),
        "recipient": verified(client, boss, kind="hospital", region="420103"),
        "logistics": verified(client, boss, kind="logistics_company", region="4201"),
    }


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack) -> Any:
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_stack.apps["gateway"])


ROLES = ("anonymous", "donor", "recipient", "logistics", "coordinator")
EXAMPLES = int(os.environ.get("AIDLINK_FUZZ_EXAMPLES") or 6)
# None: the suite's deterministic pass; a number: ``make fuzz``'s random one.
SEED = int(os.environ["AIDLINK_FUZZ_SEED"]) if os.environ.get("AIDLINK_FUZZ_SEED") else None


CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _fuzz(
    schema: Any,
    headers: dict[str, str],
    mode: GenerationMode,
    known: dict[str, list[str]] | None = None,
) -> list[str]:
    """Every operation with generated requests; the failures, described. With
    ``known`` ids (by path parameter name), path parameters take real ids from earlier
    answers, so that requests reach past the 404 of an id that does not exist."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hyp_settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=SEED is None,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            if known:
                for name in list(case.path_parameters or {}):
                    if known.get(name) and random.random() < 0.8:
                        case.path_parameters[name] = random.choice(known[name])
            extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
            case.call_and_validate(headers=headers, checks=[*CONFORMANCE, *extra])

        if SEED is not None:
            run = seed(SEED)(run)

        try:
            try:
                run()
            except Unsatisfiable:
                # Nothing to vary (no parameters, no body): the one request there is.
                extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
                operation.Case().call_and_validate(headers=headers, checks=[*CONFORMANCE, *extra])
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
    return failures


@pytest.mark.parametrize("role", ROLES)
def test_valid_requests_get_no_server_error_and_documented_answers(
    role: str, api_schema: Any, people: dict[str, Account]
) -> None:
    headers = {} if role == "anonymous" else dict(people[role].headers)
    failures = _fuzz(api_schema, headers, GenerationMode.POSITIVE)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("role", ("anonymous", "donor", "coordinator"))
def test_invalid_requests_are_refused_with_a_4xx(
    role: str, api_schema: Any, people: dict[str, Account]
) -> None:
    headers = {} if role == "anonymous" else dict(people[role].headers)
    failures = _fuzz(api_schema, headers, GenerationMode.NEGATIVE)
    assert not failures, "\n\n".join(failures)


# Sequences: ids from earlier answers -------------------------------------------------------

_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# The path parameter an answer's id fills, by the collection it came from.
_PARAMETER_OF = {
    "pledges": "pledge_id",
    "needs": "need_id",
    "shipments": "shipment_id",
    "allocations": "allocation_id",
    "webhooks": "webhook_id",
    "tokens": "token_id",
    "orgs": "org_id",
    "imports": "job_id",
    "runs": "run_id",
}


def _harvest(client: Any, people: dict[str, Account]) -> dict[str, list[str]]:
    """Real ids, from the lists each role can read after making a few things."""
    donor, recipient = people["donor"], people["recipient"]
    client.post(
        "/api/v1/pledges",
        json={
            "lines": [{"item": "mask", "quantity": "50", "unit": "piece"}],
            "origin": {"region": "4403"},
        },
        headers=donor.headers,
    )
    client.post(
        "/api/v1/needs",
        json={
            "lines": [{"item": "mask", "quantity": "20", "unit": "piece"}],
            "location": {"region": "420103"},
        },
        headers=recipient.headers,
    )
    made = client.post(
        "/api/v1/webhooks",
        json={"url": "https://example.org/hook", "event_types": ["org.verified"]},
        headers=donor.headers,
    )
    assert made.status_code == 201, made.json
    client.post(
        "/api/v1/tokens", json={"name": "fuzz", "scopes": ["orgs:read"]}, headers=donor.headers
    )
    client.post(
        "/api/v1/matching/runs", json={"dry_run": True}, headers=people["coordinator"].headers
    )
    known: dict[str, set[str]] = {}
    for collection, parameter in _PARAMETER_OF.items():
        path = (
            "/api/v1/matching/runs"
            if collection == "runs"
            else ("/api/v1/pledges/imports" if collection == "imports" else f"/api/v1/{collection}")
        )
        for who in people.values():
            page = client.get(path, headers=who.headers)
            if page.status_code == 200 and isinstance(page.json, dict):
                for item in page.json.get("items") or []:
                    if isinstance(item, dict) and _ID.match(str(item.get("id", ""))):
                        known.setdefault(parameter, set()).add(str(item["id"]))
    known.setdefault("org_id", set()).update(p.org_id for p in people.values())
    return {name: sorted(ids) for name, ids in known.items()}


@pytest.mark.parametrize("role", ("donor", "coordinator"))
def test_requests_on_real_ids_from_earlier_answers_get_documented_answers(
    role: str, api_schema: Any, people: dict[str, Account], fuzz_stack: Stack
) -> None:
    client = fuzz_stack.client()
    # Signed in afresh: the fuzzing before may have signed these sessions out.
    people = {
        name: dataclasses.replace(who, access_token=login(client, who.email)["access_token"])
        for name, who in people.items()
    }
    known = _harvest(client, people)
    assert {"pledge_id", "need_id", "webhook_id", "org_id"} <= set(known), known
    random.seed(SEED if SEED is not None else 2020)
    failures = _fuzz(api_schema, dict(people[role].headers), GenerationMode.POSITIVE, known)
    assert not failures, "\n\n".join(failures)
