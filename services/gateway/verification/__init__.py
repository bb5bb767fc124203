"""Verification of organisations by coordinators."""
