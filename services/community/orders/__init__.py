"""Household orders: rounds, batch entry by building leaders, totals, and the community need."""
