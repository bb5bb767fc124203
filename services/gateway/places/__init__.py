"""Organisations' named places (``shared.places``): kept here, announced to the services."""
