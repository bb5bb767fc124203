"""Residents' cases: intake, assignment to social workers, follow-ups and closing."""
