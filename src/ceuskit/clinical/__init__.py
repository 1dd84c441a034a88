"""Clinical input and decision support for a venous mass (decision support, not a diagnosis).

`case` reads and validates the clinical case, `scores` computes the Wells
score and interprets the D-dimer, `rules` combines them with the CEUS
findings into red flags, a level of suspicion, a ranked differential and
recommendations, each with its source.
"""

from ceuskit.clinical.case import (
    D_DIMER_UNITS,
    FEU_PER_DDU,
    ClinicalCase,
    d_dimer_to_ug_l_feu,
    example_case,
    load_case,
    parse_case,
)
from ceuskit.clinical.rules import RED_FLAG_RULES, assess, combine_flags, summary_paragraph
from ceuskit.clinical.scores import d_dimer_assessment, wells_score

__all__ = [
    "D_DIMER_UNITS",
    "FEU_PER_DDU",
    "RED_FLAG_RULES",
    "ClinicalCase",
    "assess",
    "combine_flags",
    "d_dimer_assessment",
    "d_dimer_to_ug_l_feu",
    "example_case",
    "load_case",
    "parse_case",
    "summary_paragraph",
    "wells_score",
]
