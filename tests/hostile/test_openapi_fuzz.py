"""Schemathesis against the gateway's OpenAPI document, as each role: no 5xx, and every
response (status, content type, headers, body) as the document says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.support.auth import Account, admin, coordinator, verified
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
EXAMPLES = 6


CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _fuzz(schema: Any, headers: dict[str, str], mode: GenerationMode) -> list[str]:
    """Every operation with generated requests; the failures, described."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hyp_settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
            case.call_and_validate(headers=headers, checks=[*CONFORMANCE, *extra])

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
