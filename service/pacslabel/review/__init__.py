"""Review: agreement between readers and consensus segmentations (pure numpy/scipy; no database, no HTTP).

* :mod:`pacslabel.review.agreement`: Dice and HD95 (mm) per label and reader pair, intra-rater agreement,
  Cohen's kappa, Fleiss' kappa and Krippendorff's alpha (nominal, missing answers allowed).
* :mod:`pacslabel.review.consensus`: weighted per-label majority vote and multi-label STAPLE.

The caller (the review service) decides what the numbers mean, e.g. whether an item goes to arbitration.
"""

from pacslabel.review.agreement import (
    LabelAgreement,
    PairwiseAgreement,
    cohen_kappa,
    dice,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    foreground_bounding_box,
    hausdorff_distance_95,
    intra_rater_agreement,
    krippendorff_alpha_nominal,
    label_agreement,
    pairwise_agreement,
    surface_distances,
)
from pacslabel.review.consensus import ConsensusResult, majority_vote, staple

__all__ = [
    "ConsensusResult",
    "LabelAgreement",
    "PairwiseAgreement",
    "cohen_kappa",
    "dice",
    "fleiss_kappa",
    "fleiss_kappa_from_counts",
    "foreground_bounding_box",
    "hausdorff_distance_95",
    "intra_rater_agreement",
    "krippendorff_alpha_nominal",
    "label_agreement",
    "majority_vote",
    "pairwise_agreement",
    "staple",
    "surface_distances",
]
