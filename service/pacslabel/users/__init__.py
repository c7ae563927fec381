"""Users, roles, passwords, API tokens and web sessions."""
