"""An organisation's members: invitations, roles, removal."""
