"""Marker files that worker processes leave for a test to find (which process ran
what, and when): written whole and then renamed into place, so a test that sees a
marker never reads it half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_marker(path: Path, text: str) -> None:
    # A name no test's glob of markers matches.
    partial = path.with_name(f"tmp-{os.getpid()}-{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
