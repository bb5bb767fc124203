"""Spreadsheet imports of pledges."""
