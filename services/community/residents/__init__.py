"""Buildings, who holds which role in the community, and its households."""
