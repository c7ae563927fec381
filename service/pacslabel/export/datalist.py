"""MONAI-style datalist (Medical Segmentation Decathlon ``dataset.json`` layout) for a NIfTI export.

``training`` / ``validation`` / ``test`` lists of ``{"image": ..., "label": ...}`` paths relative to the
datalist's folder (what ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads), and a
``labels`` map from label-map value to protocol label name (``"0": "background"``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

DATALIST_NAME = "dataset.json"
LIST_OF_SPLIT = {"train": "training", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class DatalistEntry:
    split: str  # train | validation | test
    image: str  # relative POSIX path of the image .nii.gz
    label: str | None  # relative path of the label map, None for an image without a segmentation


def build_datalist(
    entries: Iterable[DatalistEntry],
    labels: Sequence[Mapping[str, Any]],
    *,
    name: str,
    description: str = "",
) -> dict[str, Any]:
    """The datalist dict. ``labels`` are the manifest's protocol labels (``number``, ``label``)."""
    lists: dict[str, list[dict[str, str]]] = {key: [] for key in LIST_OF_SPLIT.values()}
    for entry in entries:
        if entry.split not in LIST_OF_SPLIT:
            raise ValueError(f"Unknown split {entry.split!r}; expected one of {', '.join(LIST_OF_SPLIT)}.")
        record = {"image": entry.image}
        if entry.label is not None:
            record["label"] = entry.label
        lists[LIST_OF_SPLIT[entry.split]].append(record)
    for records in lists.values():
        records.sort(key=lambda record: record["image"])
    return {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "labels": {"0": "background", **{str(int(label["number"])): str(label["label"]) for label in labels}},
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **lists,
    }


def datalist_bytes(datalist: Mapping[str, Any]) -> bytes:
    return (json.dumps(datalist, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def datalist_problems(datalist: Mapping[str, Any], root: Path | None = None) -> list[str]:
    """What is wrong with a datalist (empty when it is valid); with ``root``, also files that do not exist."""
    problems = []
    for key in ("labels", *LIST_OF_SPLIT.values()):
        if key not in datalist:
            problems.append(f"missing key {key!r}")
    labels = datalist.get("labels") or {}
    if not all(str(k).isdigit() for k in labels):
        problems.append("label keys must be label-map values (digits)")
    for key in LIST_OF_SPLIT.values():
        for index, record in enumerate(datalist.get(key) or []):
            for field in ("image", "label"):
                if field not in record:
                    if field == "image":
                        problems.append(f"{key}[{index}] has no image")
                    continue
                path = PurePosixPath(str(record[field]))
                if path.is_absolute() or ".." in path.parts:
                    problems.append(f"{key}[{index}].{field} is not a relative path inside the export: {path}")
                elif not str(path).endswith(".nii.gz"):
                    problems.append(f"{key}[{index}].{field} is not a .nii.gz file: {path}")
                elif root is not None and not (root / path).is_file():
                    problems.append(f"{key}[{index}].{field} does not exist: {path}")
    for key, count_key in (("training", "numTraining"), ("validation", "numValidation"), ("test", "numTest")):
        if count_key in datalist and datalist[count_key] != len(datalist.get(key) or []):
            problems.append(f"{count_key} is {datalist[count_key]} but {key} has {len(datalist.get(key) or [])}")
    return problems
