"""Production logs are JSON lines that carry the request and correlation ids."""

from __future__ import annotations

import json
import logging

import pytest

from shared.observability import configure_logging, correlation_id_var, request_id_var


def test_json_log_line_carries_service_request_and_correlation_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("donations", "json", "INFO")
    request_token = request_id_var.set("req-7")
    correlation_token = correlation_id_var.set("story-3")
    try:
        logging.getLogger("aidlink.test").info("reserved %d masks", 500)
    finally:
        request_id_var.reset(request_token)
        correlation_id_var.reset(correlation_token)
        configure_logging("donations", "text", "INFO")

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "reserved 500 masks"
    assert line["level"] == "INFO"
    assert line["service"] == "donations"
    assert line["request_id"] == "req-7"
    assert line["correlation_id"] == "story-3"
