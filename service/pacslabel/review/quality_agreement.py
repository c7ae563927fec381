"""Inter-rater agreement of a project's readers, for the project quality view (issue 5).

Classification questions: the *raters* are the readers of an item's first reads (purpose ``read``, submitted or
done; repeats measure a reader against themselves and arbitrations are not independent, so neither counts);
each read's answer is the one in its latest SR. Per question, over a set of items:

- ``items_rated``: items with at least two reads answering the question (the only ones that say anything about
  agreement);
- ``answers``: how often each answer was given, over every read that answered (items with one read included);
- ``fleiss_kappa``: Fleiss (1971) needs the same number of raters for every item, so it is computed over the
  items rated by the most common number of readers (``fleiss_raters``; on a tie the larger number, which
  uses more information per item); ``fleiss_items`` items entered it and ``fleiss_excluded`` items rated by
  another number of readers were left out (they still count in Krippendorff's alpha);
- ``krippendorff_alpha``: nominal alpha over the (reader x item) table with missing answers, which uses every
  item with at least two answers whatever the number of readers.

An undefined coefficient (one answer throughout, or fewer than two rated items for Fleiss) is ``None``.

Segmentations: per protocol label, the pairwise Dice and HD95 between the reads that entered each item's latest
consensus (``consensus_results.pairs``): ``n``, median and interquartile range (numpy's linear percentiles).
HD95 is summarised over its finite values; ``hd95_infinite`` counts the pairs where one read has the label and
the other does not (HD95 is infinite, stored as null).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pacslabel.review.agreement import fleiss_kappa, krippendorff_alpha_nominal

__all__ = ["answer_agreement", "distribution_summary", "segment_agreement"]

# item id -> reader id -> answer (one question)
AnswersByItem = Mapping[int, Mapping[int, str]]


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def answer_agreement(answers: AnswersByItem) -> dict[str, Any]:
    """The agreement numbers of one question over some items (see the module docstring)."""
    distribution = Counter(answer for by_reader in answers.values() for answer in by_reader.values())
    rated = {item: by_reader for item, by_reader in answers.items() if len(by_reader) >= 2}
    out: dict[str, Any] = {
        "items_rated": len(rated),
        "answers": dict(sorted(distribution.items())),
        "fleiss_raters": None,
        "fleiss_items": 0,
        "fleiss_excluded": 0,
        "fleiss_kappa": None,
        "krippendorff_alpha": None,
    }
    if not rated:
        return out
    sizes = Counter(len(by_reader) for by_reader in rated.values())
    raters = max(sizes, key=lambda size: (sizes[size], size))
    rows = [list(by_reader.values()) for item, by_reader in sorted(rated.items()) if len(by_reader) == raters]
    out["fleiss_raters"] = raters
    out["fleiss_items"] = len(rows)
    out["fleiss_excluded"] = len(rated) - len(rows)
    if len(rows) >= 2:
        out["fleiss_kappa"] = _defined(fleiss_kappa(rows))
    readers = sorted({reader for by_reader in rated.values() for reader in by_reader})
    items = sorted(rated)
    table = [[rated[item].get(reader) for item in items] for reader in readers]
    out["krippendorff_alpha"] = _defined(krippendorff_alpha_nominal(table))
    return out


def distribution_summary(values: Iterable[float]) -> dict[str, Any]:
    """n, median, first and third quartile and IQR of some values (None when there are none)."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, median, q3 = (float(v) for v in np.percentile(array, [25, 50, 75]))
    return {"n": int(array.size), "median": median, "q1": q1, "q3": q3, "iqr": q3 - q1}


def segment_agreement(pairs: Sequence[Mapping[str, Any]], label_order: Sequence[str]) -> dict[str, Any]:
    """Per label name: summaries of the pairwise Dice and (finite) HD95, and the count of infinite HD95.

    ``pairs`` are consensus pair rows whose ``label`` is already a label name; labels of the protocol come
    first in protocol order, then any other label a pair names."""
    dice: dict[str, list[float]] = defaultdict(list)
    hd95: dict[str, list[float]] = defaultdict(list)
    infinite: Counter[str] = Counter()
    for pair in pairs:
        label = str(pair["label"])
        if pair.get("dice") is not None:
            dice[label].append(float(pair["dice"]))
        value = pair.get("hd95_mm")
        if value is None or not math.isfinite(float(value)):
            infinite[label] += 1
        else:
            hd95[label].append(float(value))
    labels = list(label_order) + sorted(set(dice) - set(label_order))
    return {
        label: {
            "pairs": len(dice[label]),
            "dice": distribution_summary(dice[label]),
            "hd95_mm": distribution_summary(hd95[label]),
            "hd95_infinite": infinite[label],
        }
        for label in labels
    }
