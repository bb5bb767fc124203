"""Needs: what hospitals and communities ask for, from draft to closed."""
