"""Receipts: what a recipient confirms it received."""
