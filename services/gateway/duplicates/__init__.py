"""Duplicate organisations: detection and review."""
