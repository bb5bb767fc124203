"""Sign-in, accounts and sessions."""
