"""API tokens: what the audit log keeps of one."""

TOKEN_AUDIT_FIELDS = ("name", "prefix", "scopes", "org_id", "expires_at", "revoked_at")
