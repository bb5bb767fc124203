"""The item catalogue, as the donations service publishes it."""
