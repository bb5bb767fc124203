"""The README's configuration table names every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Read by the test suite and the fuzzer only, documented with the tests.
TEST_ONLY = {
    "AIDLINK_TEST_BACKEND",
    "AIDLINK_TEST_POSTGRES_URL",
    "AIDLINK_TEST_REDIS_URL",
    "AIDLINK_FUZZ_SEED",
    "AIDLINK_FUZZ_EXAMPLES",
}
SETTING = re.compile(r"AIDLINK_[A-Z0-9_]*[A-Z0-9]")


def _read_by_code() -> set[str]:
    found: set[str] = set()
    for folder in ("services", "shared"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(SETTING.findall(path.read_text(encoding="utf-8")))
    return found - TEST_ONLY


def test_every_setting_has_a_row_in_the_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(SETTING.findall(table))
    missing = sorted(_read_by_code() - documented)
    assert missing == [], f"add these to the README's configuration table: {missing}"
