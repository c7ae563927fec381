"""What changed between two snapshots of a project ("what was released since snapshot X").

Items are matched by item id. An item is *added* when only the newer manifest has it, *removed* when only
the older one has it (e.g. the newer snapshot leaves out the test split), and *changed* when its final label
objects, its split or its source instances differ (a consensus replaced by an arbitration, a re-read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _item_summary(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"item_id": item["item_id"], "split": item["split"], "study_instance_uid": item["study_instance_uid"],
            "released_at": item["released_at"],
            "labels": [label["sop_instance_uid"] for label in item["labels"]]}


def _fingerprint(item: Mapping[str, Any]) -> tuple[Any, ...]:
    instances = tuple(sorted((instance["sop_instance_uid"], instance["sha256"])
                             for series in item["source_series"] for instance in series["instances"]))
    labels = tuple(sorted((label["sop_instance_uid"], label["sha256"]) for label in item["labels"]))
    return item["split"], instances, labels


def diff_manifests(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Added, removed and changed items from ``older`` to ``newer`` (parsed manifests of one project)."""
    if older["project"]["id"] != newer["project"]["id"]:
        raise ValueError(f"Snapshots {older['snapshot']['name']} and {newer['snapshot']['name']} are of different "
                         "projects; only snapshots of one project can be compared.")
    before = {int(item["item_id"]): item for item in older["items"]}
    after = {int(item["item_id"]): item for item in newer["items"]}
    added = [_item_summary(after[i]) for i in sorted(after.keys() - before.keys())]
    removed = [_item_summary(before[i]) for i in sorted(before.keys() - after.keys())]
    changed = []
    for item_id in sorted(before.keys() & after.keys()):
        if _fingerprint(before[item_id]) != _fingerprint(after[item_id]):
            changed.append({"item_id": item_id, "before": _item_summary(before[item_id]),
                            "after": _item_summary(after[item_id])})
    return {"from": older["snapshot"]["name"], "to": newer["snapshot"]["name"],
            "added": added, "removed": removed, "changed": changed,
            "counts": {"added": len(added), "removed": len(removed), "changed": len(changed),
                       "unchanged": len(before.keys() & after.keys()) - len(changed)}}
