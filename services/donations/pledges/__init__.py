"""Pledges: what donors offer, and the reservations against them."""
