"""Allocations: the dispatch side of the reservation saga."""
