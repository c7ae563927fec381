"""The one access policy: which studies, series and instances a user may see (architecture invariant 4)."""

from pacslabel.access.policy import AccessPolicy, AccessSnapshot, StudyGrant, take_snapshot

__all__ = ["AccessPolicy", "AccessSnapshot", "StudyGrant", "take_snapshot"]
