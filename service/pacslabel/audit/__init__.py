"""Append-only audit events: who did what, when, to which object."""
