"""Wells DVT score and D-dimer interpretation.

Both functions take a `ClinicalCase` (or None) and return plain dicts that go
into results.json and the report unchanged.  Neither guesses: an item or value
that was not given is listed as missing, and the result says how far the
missing items could move it.
"""

from __future__ import annotations

from typing import Any

from ceuskit.clinical.case import FEU_NOTE, ClinicalCase, WellsItems

WELLS_SOURCE = "Wells et al., Lancet 1997;350:1795; Wells et al., NEJM 2003;349:1227"
#: The ~5 / 17 / 53 % prevalences of the three Wells categories.
WELLS_PREVALENCE_SOURCE = "Wells et al., JAMA 2006;295:199 (prevalence of DVT by Wells category)"
D_DIMER_SOURCE = (
    "Schouten et al., BMJ 2013;346:f2492 (age-adjusted cut-off for suspected venous thromboembolism, "
    "13 cohorts, n=12,497); Righini et al., ADJUST-PE, JAMA 2014;311:1117 (a study of pulmonary embolism: "
    "its support for the age-adjusted cut-off is extrapolated to DVT); Wells et al., NEJM 2003;349:1227 "
    "(D-dimer with the Wells score rules out DVT; it used a conventional, not age-adjusted, cut-off)"
)

#: Points of each Wells item, in the order of the original score.
WELLS_POINTS: dict[str, int] = {
    "active_cancer": 1, "paralysis_paresis_or_recent_cast": 1, "bedridden_or_major_surgery": 1,
    "localized_tenderness": 1, "entire_leg_swollen": 1, "calf_swelling_over_3cm": 1,
    "pitting_edema_symptomatic_leg": 1, "collateral_superficial_veins": 1, "previous_dvt": 1,
    "alternative_diagnosis_as_likely": -2,
}
#: (item, points, wording): the wording is the case model's field title (one definition,
#: shared with the web form).
WELLS_ITEMS: tuple[tuple[str, int, str], ...] = tuple(
    (item, points, str(WellsItems.model_fields[item].title)) for item, points in WELLS_POINTS.items())

#: Conventional D-dimer cut-off, ug/L FEU.
D_DIMER_CUTOFF_UG_L_FEU = 500.0
#: Above this age (years) the age-adjusted cut-off applies.
AGE_ADJUST_ABOVE_YEARS = 50.0
#: Age-adjusted cut-off = age x this factor, ug/L FEU per year.
AGE_ADJUST_UG_L_PER_YEAR = 10.0


def wells_three_level(points: int) -> str:
    """<= 0 low (~5 % prevalence), 1-2 moderate (~17 %), >= 3 high (~53 %)."""
    if points <= 0:
        return "low"
    return "moderate" if points <= 2 else "high"


def wells_two_level(points: int) -> str:
    """>= 2 "likely", otherwise "unlikely" (NEJM 2003)."""
    return "likely" if points >= 2 else "unlikely"


def wells_score(case: ClinicalCase | None) -> dict[str, Any]:
    """The Wells DVT score from the case's items.

    A missing item counts 0 points but is listed in ``missing``; the range of
    points the missing items allow is given so a reader can see whether the
    category could change.

    Returns
    -------
    dict
        ``points`` (int), ``items`` (the items present: id, text, points),
        ``three_level`` (low|moderate|high), ``two_level`` (likely|unlikely),
        ``prevalence_note``, ``missing`` (item ids not given),
        ``points_range`` ([min, max] over the missing items), ``complete``
        (bool), ``determined`` (whether both categories hold over that range),
        ``category`` (the three-level category, or None when not determined),
        ``display`` (one honest line: the category only when determined,
        otherwise which items are missing and the range they allow),
        ``source``, ``prevalence_source``.
    """
    wells = case.wells if case is not None else None
    counted: list[dict[str, Any]] = []
    missing: list[str] = []
    points = 0
    low = high = 0
    for item, item_points, text in WELLS_ITEMS:
        value = getattr(wells, item) if wells is not None else None
        if value is None:
            missing.append(item)
            low += min(item_points, 0)
            high += max(item_points, 0)
        elif value:
            counted.append({"id": item, "text": text, "points": item_points})
            points += item_points
    lo, hi = points + low, points + high
    determined = (wells_three_level(lo) == wells_three_level(hi)
                  and wells_two_level(lo) == wells_two_level(hi))
    three = wells_three_level(points)
    prevalence = {"low": "~5 % DVT prevalence", "moderate": "~17 % DVT prevalence",
                  "high": "~53 % DVT prevalence"}
    if determined:
        display = (f"{_points(points)}: {three} ({prevalence[three]}); DVT {wells_two_level(points)}"
                   + (f" (whatever the {len(missing)} missing item{'' if len(missing) == 1 else 's'})"
                      if missing else ""))
    else:
        display = (f"category undetermined: {len(WELLS_ITEMS) - len(missing)} of {len(WELLS_ITEMS)} items "
                   f"given ({_points(points)}); the missing items allow {lo} to {hi} points "
                   f"({wells_three_level(lo)} to {wells_three_level(hi)})")
    return {
        "points": points,
        "items": counted,
        "three_level": three,
        "two_level": wells_two_level(points),
        "prevalence_note": prevalence[three],
        "category": three if determined else None,
        "display": display,
        "prevalence_source": WELLS_PREVALENCE_SOURCE,
        "missing": missing,
        "points_range": [lo, hi],
        "complete": not missing,
        "determined": determined,
        "source": WELLS_SOURCE,
    }


def _points(n: int) -> str:
    return f"{n} point" + ("" if n in (1, -1) else "s")


def d_dimer_cutoff_ug_l_feu(age_years: float | None) -> tuple[float, str]:
    """The cut-off that applies at this age, with the rule in words.

    Conventional 500 ug/L FEU; for age > 50 years, age x 10 ug/L FEU
    (Schouten et al., BMJ 2013).  Unknown age -> the conventional cut-off.
    """
    if age_years is not None and age_years > AGE_ADJUST_ABOVE_YEARS:
        cutoff = age_years * AGE_ADJUST_UG_L_PER_YEAR
        return cutoff, f"age-adjusted: age {age_years:g} y x 10 = {cutoff:g} ug/L FEU (age > 50)"
    if age_years is None:
        return D_DIMER_CUTOFF_UG_L_FEU, "conventional 500 ug/L FEU (age not given, so no age adjustment)"
    return D_DIMER_CUTOFF_UG_L_FEU, "conventional 500 ug/L FEU (age <= 50)"


def d_dimer_assessment(case: ClinicalCase | None) -> dict[str, Any]:
    """Interpret the case's D-dimer.

    Returns
    -------
    dict
        ``given`` (bool), ``value`` / ``unit`` as given, ``value_ug_l_feu``,
        ``conversion`` (the factor used, in words), ``cutoff_ug_l_feu`` and
        ``cutoff_rule`` (which cut-off applies and why),
        ``conventional_cutoff_ug_l_feu``, ``age_adjusted_cutoff_ug_l_feu``
        (None at age <= 50 or unknown age), ``lab_cutoff_ug_l_feu``,
        ``result`` (normal|raised|None), ``result_basis`` ("value" or
        "laboratory report"), ``can_rule_out`` (True only for a normal result
        with Wells "unlikely"; False with Wells likely or high; None when
        unknown), ``notes``, ``source``.
    """
    dd = case.d_dimer if case is not None else None
    age = case.age_years if case is not None else None
    cutoff, rule = d_dimer_cutoff_ug_l_feu(age)
    out: dict[str, Any] = {
        "given": False, "value": None, "unit": None, "value_ug_l_feu": None, "conversion": None,
        "cutoff_ug_l_feu": cutoff, "cutoff_rule": rule,
        "conventional_cutoff_ug_l_feu": D_DIMER_CUTOFF_UG_L_FEU,
        "age_adjusted_cutoff_ug_l_feu": (age * AGE_ADJUST_UG_L_PER_YEAR
                                         if age is not None and age > AGE_ADJUST_ABOVE_YEARS else None),
        "lab_cutoff_ug_l_feu": None, "result": None, "result_basis": None, "can_rule_out": None,
        "notes": [], "source": D_DIMER_SOURCE,
    }
    notes: list[str] = out["notes"]
    if dd is None or (dd.value is None and dd.result is None):
        notes.append("D-dimer not given")
        return out
    out["given"] = True
    value = dd.value_ug_l_feu()
    if value is not None and dd.unit is not None:
        out.update(value=dd.value, unit=dd.unit, value_ug_l_feu=value)
        mass = dd.unit.split(" ")[0]
        conv = [f"{mass} -> ug/L x {1000 if mass in ('mg/L', 'ug/mL') else 1}"]
        if dd.unit.endswith("DDU"):
            conv.append(FEU_NOTE)
        out["conversion"] = "; ".join(conv)
        out["result"] = "raised" if value > cutoff else "normal"
        out["result_basis"] = "value"
        lab = dd.lab_cutoff_ug_l_feu()
        if lab is not None:
            out["lab_cutoff_ug_l_feu"] = lab
            lab_result = "raised" if value > lab else "normal"
            if lab_result != out["result"]:
                notes.append(f"the laboratory's own cut-off ({lab:g} ug/L FEU) gives '{lab_result}': "
                             "assay-specific cut-offs differ; ceuskit reports the cut-off above")
        if dd.result is not None and dd.result != out["result"]:
            notes.append(f"the laboratory reported '{dd.result}' but the value against "
                         f"{cutoff:g} ug/L FEU is '{out['result']}'")
    else:
        out["result"] = dd.result
        out["result_basis"] = "laboratory report"
        notes.append("qualitative result only (no value): the laboratory's own cut-off was used")
    if case is not None and case.pregnant:
        notes.append("pregnant: D-dimer rises physiologically through pregnancy, so a raised value against "
                     "the non-pregnant cut-off is expected and does not support DVT; no pregnancy-specific "
                     "cut-off is applied")
    if dd.on_anticoagulation:
        notes.append("measured on anticoagulation, which lowers D-dimer: a normal value is expected and is "
                     "neither reassurance nor the chronic normal-D-dimer red flag")
    wells = wells_score(case)
    if out["result"] == "normal":
        if wells["three_level"] == "high":
            out["can_rule_out"] = False
            notes.append("Wells is high: a normal D-dimer cannot rule out DVT; imaging is needed")
        elif wells["two_level"] == "likely":
            out["can_rule_out"] = False
            notes.append("Wells 'DVT likely': a normal D-dimer does not rule out DVT without imaging")
        elif wells["complete"]:
            out["can_rule_out"] = True
            notes.append("normal D-dimer with Wells 'DVT unlikely' rules out acute DVT (NEJM 2003)")
        else:
            notes.append("Wells incomplete: whether the normal D-dimer rules out DVT is undetermined")
    elif out["result"] == "raised":
        out["can_rule_out"] = False
        notes.append("raised D-dimer is not specific (surgery, cancer, inflammation, age raise it)")
    if wells["three_level"] == "high" and out["result"] != "normal":
        notes.append("Wells is high: D-dimer is not used to rule out DVT; imaging is needed")
    return out
