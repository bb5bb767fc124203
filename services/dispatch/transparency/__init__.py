"""Transparency: traces of a donation and the public ledger."""
