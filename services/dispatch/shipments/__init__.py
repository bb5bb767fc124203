"""Shipments: reserved allocations on their way, and their status."""
