"""Decision support for a venous mass: red flags, level of suspicion, differential, next steps.

`assess(findings, case)` combines the CEUS findings (`ceuskit.findings`, may
be None) with the clinical case (`ClinicalCase`, may be None).  Every red
flag, differential entry and recommendation carries an ``id`` and a short
source; where no published rule exists the item says ``"proposed": true``
(ceuskit's own heuristic).  The output supports a clinician's decision; it
never states a diagnosis.

Red flags
---------
CEUS (only when the intraluminal material was assessable):
``ceus-enhancement`` (the material enhances: tumour in vein), and, only when
it enhances, the malignant kinetic pattern ``ceus-rapid-wash-in``,
``ceus-hyperenhancement``, ``ceus-heterogeneous``, ``ceus-wash-out`` and
``ceus-necrosis`` (>= 10 % non-enhancing area, proposed).
Clinical: ``clin-refractory-anticoagulation`` (worse; or unchanged after
>= 14 days together with a mass or an atypical feature, `ATYPICAL_FLAGS`:
"unchanged" alone is the usual course of a post-thrombotic vein),
``clin-recurrence``, ``clin-unprovoked-young`` (< 50 years, proposed),
``clin-unusual-site`` (IVC, gonadal, renal or another non-leg vein, proposed).
Laboratory: ``lab-normal-d-dimer-chronic`` (symptoms >= 28 days and a normal
D-dimer not measured on anticoagulation, proposed, after the index case).
Ultrasound: ``us-extraluminal-mass`` (a mass, an extraluminal component or
compression by a mass; not compression by an artery, and not a cystic lesion
without thrombus or at the knee), ``us-vein-expansion``,
``us-heterogeneous-mass``, ``us-arterial-waveform`` and the weaker
``us-internal-colour-flow``.

Strong flags are: refractory anticoagulation, chronic normal D-dimer,
extraluminal mass, vein expansion, heterogeneous mass, arterial waveform.

Level rule (ceuskit's own heuristic: no validated score exists for a
peripheral venous mass)
----------------------------------------------------------------------------
`LEVEL_TABLE`, read from the top, first condition that holds decides:

* high: CEUS enhancement with a malignant kinetic pattern or any further red
  flag; or >= 3 items of the peripheral A-VENA adaptation (adapted from
  Sherman et al., Liver Transpl 2019; its original accuracy does not carry
  over).
* intermediate: CEUS enhancement alone; a solid mass, an extraluminal
  component or compression by a mass, whatever CEUS shows of the lumen; >= 2
  strong flags; without an assessable CEUS, >= 2 red flags.
* low: a non-enhancing lesion on CEUS; or, with no red flag, an ultrasound
  without a mass and a clinical picture that positively supports a benign
  cause (`_bland_support`).
* indeterminate otherwise, naming what is needed (never low by default).

``suspect_neoplasm`` = level is high or intermediate.  Adding a red flag never
lowers the level (monotone; tested).

Differential ranking
--------------------
Each candidate starts from a prior weight (bland DVT 1, rare entities -0.5,
the rest 0); each supporting fact adds its weight and each fact against
subtracts its weight (weights in `DIFFERENTIAL`).  Sex is weak evidence: it
never lifts an entity above bland DVT on its own.  Site-specific entities
score only where they can occur (Baker cyst: popliteal or calf; May-Thurner:
the left common iliac vein).  A known or suspected renal, adrenal or hepatic
primary, or such an organ mass beside the vein, ranks tumour thrombus above
primary leiomyosarcoma; the recommendations then refer for staging
(``rec-primary-staging``) instead of to the sarcoma team, and FNCLCC grading
is offered only when a sarcoma leads.  Candidates are ranked by
this score, ties in catalogue order.  The weights are ceuskit's heuristic; the
facts they weigh come from the cited sources.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ceuskit import DISCLAIMER
from ceuskit.clinical.case import ILIAC_SITES, ClinicalCase
from ceuskit.clinical.scores import WELLS_ITEMS, d_dimer_assessment, wells_score, wells_two_level
from ceuskit.fmt import fmt_days

_WELLS_WORDING = {item: text for item, _, text in WELLS_ITEMS}

#: Levels in order of suspicion; ``indeterminate`` sits above ``low``: it is
#: given where too little could be assessed to say low, and never reassures.
LEVELS = ("low", "indeterminate", "intermediate", "high")

SRC_META = ("Eur Radiol 2020 meta-analysis, doi:10.1007/s00330-019-06649-z (sens 0.94, spec 0.99, n=425; "
            "portal-vein thrombus in liver cancer: applied to limb veins by extrapolation)")
SRC_LIRADS_TIV = "CEUS LI-RADS 'tumour in vein' definition (LR-TIV; definition only)"
SRC_SORRENTINO = ("Sorrentino et al., World J Gastroenterol 2009;15:2245, doi:10.3748/wjg.15.2245 "
                  "(portal-vein thrombosis in hepatocellular carcinoma; extrapolated to limb veins)")
SRC_CASE_SERIES = "Case Rep Med 2011:123041; Phlebology 2025, doi:10.1177/02683555251348784"
SRC_DODD = ("Dodd et al., AJR 1995;165:573 (pulsatile flow: sens 0.62, spec 0.95; portal-vein thrombus in "
            "cirrhosis, extrapolated to limb veins)")
SRC_AVENA = ("Sherman et al., Liver Transpl 2019;25:207 (A-VENA, portal-vein tumour thrombus in "
             "hepatocellular carcinoma; its accuracy does not carry over to the peripheral adaptation)")
SRC_INDEX = ("published case report: venous leiomyosarcoma of the external iliac vein treated as DVT "
             "(the index case)")
SRC_DIFF = "ceuskit clinical reference: differential of a venous mass"
SRC_SARCOMA = "ESMO-EURACAN-GENTURIS sarcoma guideline, Gronchi et al., Ann Oncol 2021;32:1348"
SRC_FNCLCC = "FNCLCC grade (Trojani et al., Int J Cancer 1984;33:37); necrosis 0 none, 1 < 50 %, 2 >= 50 %"
SRC_WELLS = "Wells et al., NEJM 2003;349:1227; prevalences by category: Wells et al., JAMA 2006;295:199"
SRC_HEURISTIC = "ceuskit heuristic (proposed)"
SRC_RCC_IVC = "Cancer Imaging 2019, doi:10.1186/s40644-019-0265-x (renal cell carcinoma IVC thrombus)"
SRC_CONTRAST_PREGNANCY = ("SonoVue (sulphur hexafluoride microbubbles) EU SmPC and Lumason US prescribing "
                          "information: no data in pregnant women")
#: Appended to every recommendation that involves a contrast agent when the patient is pregnant.
PREGNANCY_CONTRAST_CAVEAT = (
    " -- Pregnancy: ultrasound contrast agents are not recommended in pregnancy (no safety data in pregnant "
    "women; SonoVue/Lumason labelling); weigh any contrast study (ultrasound, CT or MRI) with the obstetric "
    "and radiology teams, and prefer non-contrast MRI where cross-sectional imaging is needed")

#: Necrosis (percent of the lesion area) above which it counts as a red flag (proposed).
NECROSIS_FLAG_PERCENT = 10.0
#: Symptom duration from which a "thrombus" counts as chronic (proposed), days.
CHRONIC_DAYS = 28.0
#: Anticoagulation shorter than this is too early to call "unchanged" a failure, days.
ANTICOAG_MIN_DAYS = 14.0
#: Below this age an unprovoked thrombosis counts as "young" (proposed), years.
YOUNG_YEARS = 50.0
#: A-VENA (peripheral adaptation) items needed for "high".
AVENA_THRESHOLD = 3


@dataclass(frozen=True)
class FlagRule:
    """A red flag the rules can raise."""

    id: str
    text: str
    category: str  # ceus | clinical | ultrasound | laboratory
    source: str
    proposed: bool = False
    strong: bool = False
    kinetic: bool = False
    avena: str | None = None
    short: str = ""  # a few words for summaries


_RULES: tuple[FlagRule, ...] = (
    FlagRule("ceus-enhancement", "Intraluminal material enhances on CEUS: tumour in vein, not bland thrombus",
             "ceus", f"{SRC_META}; {SRC_LIRADS_TIV}", avena="enhancement on CEUS"),
    FlagRule("ceus-rapid-wash-in", "Rapid wash-in: the lesion enhances before the reference tissue",
             "ceus", f"{SRC_SORRENTINO} (early enhancement = malignant pattern)", kinetic=True),
    FlagRule("ceus-hyperenhancement", "Hyper-enhancement relative to the reference tissue",
             "ceus", f"{SRC_SORRENTINO} (early hyper-enhancement = malignant pattern)", kinetic=True),
    FlagRule("ceus-heterogeneous", "Heterogeneous (mosaic) enhancement",
             "ceus", f"{SRC_SORRENTINO} (mosaic = malignant pattern)", kinetic=True),
    FlagRule("ceus-wash-out", "Wash-out after enhancement (applied to venous masses by ceuskit)",
             "ceus", f"CEUS LI-RADS wash-out terminology; {SRC_INDEX}; {SRC_HEURISTIC}",
             proposed=True, kinetic=True),
    FlagRule("ceus-necrosis",
             f"Non-enhancing (necrotic) area >= {NECROSIS_FLAG_PERCENT:g} % of an enhancing lesion",
             "ceus", f"{SRC_HEURISTIC}; necrosis quartiles precedent Clin Mol Hepatol 2015;21:158",
             proposed=True),
    FlagRule("clin-refractory-anticoagulation", "No improvement or progression despite anticoagulation",
             "clinical", f"{SRC_CASE_SERIES}; {SRC_INDEX}", strong=True,
             avena="no response to anticoagulation"),
    FlagRule("clin-recurrence", "Recurrent 'thrombosis'", "clinical", SRC_CASE_SERIES),
    FlagRule("clin-unprovoked-young", f"Unprovoked 'DVT' in a young patient (< {YOUNG_YEARS:g} years)",
             "clinical", f"{SRC_CASE_SERIES}; age limit: {SRC_HEURISTIC}", proposed=True),
    FlagRule("clin-unusual-site", "Unusual site for a DVT (inferior vena cava or a non-leg vein)",
             "clinical", f"{SRC_CASE_SERIES}; which sites count: {SRC_HEURISTIC}", proposed=True),
    FlagRule("lab-normal-d-dimer-chronic",
             "Chronic persistent 'thrombus' with a normal D-dimer: a red flag, not reassurance",
             "laboratory", f"{SRC_HEURISTIC}, following the index case ({SRC_INDEX})",
             proposed=True, strong=True),
    FlagRule("us-extraluminal-mass", "Mass effect or a component outside the vein lumen",
             "ultrasound", SRC_CASE_SERIES, strong=True, avena="mass outside the lumen"),
    FlagRule("us-vein-expansion", "Expansile vein", "ultrasound", f"{SRC_CASE_SERIES}; {SRC_AVENA}",
             strong=True, avena="vein expansion"),
    FlagRule("us-heterogeneous-mass", "Heterogeneous mass on B-mode", "ultrasound",
             f"{SRC_CASE_SERIES}; {SRC_INDEX}", strong=True),
    FlagRule("us-arterial-waveform", "Arterial (pulsatile) waveform inside the 'thrombus' on colour Doppler",
             "ultrasound", SRC_DODD, strong=True, avena="arterial neovascularity on Doppler"),
    FlagRule("us-internal-colour-flow",
             "Colour Doppler flow inside the 'thrombus' (weak: organising thrombus can be vascularised)",
             "ultrasound", SRC_DODD),
)

_SHORT = {
    "ceus-enhancement": "CEUS enhancement", "ceus-rapid-wash-in": "rapid wash-in",
    "ceus-hyperenhancement": "hyper-enhancement", "ceus-heterogeneous": "heterogeneous enhancement",
    "ceus-wash-out": "wash-out", "ceus-necrosis": "necrosis",
    "clin-refractory-anticoagulation": "no response to anticoagulation", "clin-recurrence": "recurrence",
    "clin-unprovoked-young": "unprovoked in a young patient", "clin-unusual-site": "unusual site",
    "lab-normal-d-dimer-chronic": "chronic 'thrombus' with normal D-dimer",
    "us-extraluminal-mass": "mass outside the lumen", "us-vein-expansion": "vein expansion",
    "us-heterogeneous-mass": "heterogeneous mass", "us-arterial-waveform": "arterial waveform on Doppler",
    "us-internal-colour-flow": "internal colour Doppler flow",
}
_RULES = tuple(replace(r, short=_SHORT[r.id]) for r in _RULES)
RED_FLAG_RULES: dict[str, FlagRule] = {r.id: r for r in _RULES}
_KINETIC_IDS = frozenset(r.id for r in _RULES if r.kinetic)
#: Flags that make "unchanged on anticoagulation" count as refractory (a mass or an atypical feature).
ATYPICAL_FLAGS = frozenset({"us-extraluminal-mass", "us-vein-expansion", "us-heterogeneous-mass",
                            "us-arterial-waveform", "ceus-enhancement"})

#: The level rule as a decision table: (condition, level floor, reason).  The rows are read
#: top to bottom; the first condition that holds gives the level, and every row of that level
#: that holds gives a reason.  Only the last two rows give "low" or "indeterminate", so a
#: documented mass, extraluminal component or compression by a mass is at least
#: "intermediate" whatever CEUS shows of the lumen.  ceuskit's own heuristic: no validated
#: score exists for a peripheral venous mass.
LEVEL_TABLE: tuple[tuple[str, str, str], ...] = (
    ("enhancing-with-kinetics", "high",
     "CEUS enhancement with a malignant kinetic pattern ({kinetic})"),
    ("enhancing-plus-flag", "high", "CEUS enhancement plus further red flags: {further}"),
    ("avena", "high", "{n_avena} of 5 items of the peripheral A-VENA adaptation (proposed): {avena}"),
    ("enhancing", "intermediate",
     "CEUS enhancement of the intraluminal material without a further red flag"),
    ("mass-outside-lumen", "intermediate",
     "a solid mass, a component outside the lumen or compression by a mass: CEUS of the lumen cannot "
     "exclude a tumour outside it, so cross-sectional imaging is needed whatever the lumen shows"),
    ("two-strong-flags", "intermediate",
     "{n_strong} strong clinical/ultrasound/laboratory red flags ({strong}): a bland lumen on CEUS cannot "
     "exclude a mass compressing the vein from outside"),
    ("two-flags-without-ceus", "intermediate",
     "{n_other} clinical/ultrasound/laboratory red flags without an assessable CEUS"),
    ("non-enhancing", "low", "no intraluminal enhancement on CEUS (bland-thrombus pattern){fewer}"),
    ("benign-clinical-picture", "low",
     "no red flag, no mass on ultrasound, and the clinical picture supports a benign cause: {support}"),
    ("too-little-known", "indeterminate",
     "too little is known to call the suspicion low{only}: needed: an assessable CEUS of the intraluminal "
     "material (contrast mode, from before the injection through wash-out, with a reference ROI in adjacent "
     "muscle) or, failing that, the ultrasound features and a clinical picture that supports a bland "
     "thrombus"),
)

COMBINATION_RULE_TEXT = (
    "ceuskit's own heuristic (no validated score exists for a peripheral venous mass), read as a table from "
    "the top, first match decides. High: CEUS enhancement of the intraluminal material together with a "
    "malignant kinetic pattern (rapid wash-in, hyper-enhancement, heterogeneity or wash-out) or any further "
    "red flag; or >= 3 items of the peripheral A-VENA adaptation (vein expansion, CEUS enhancement, arterial "
    "neovascularity on Doppler, mass outside the lumen, no response to anticoagulation). Intermediate: CEUS "
    "enhancement alone; a solid mass, an extraluminal component or compression by a mass, whatever the lumen "
    "shows on CEUS (compression by an artery, as in May-Thurner, and a cystic lesion without thrombus do "
    "not count); >= 2 strong clinical/ultrasound/laboratory flags; without an assessable CEUS, >= 2 red "
    "flags. Low: a non-enhancing lesion on CEUS; or, with no red flag, an ultrasound without a mass and a "
    "clinical picture that positively supports a benign cause. Otherwise indeterminate (never low), naming "
    "what is needed. Adding a red flag never lowers the level."
)


def _level_conditions(flags: list[FlagRule], ceus_non_enhancing: bool,
                      bland_support: Collection[str]) -> dict[str, dict[str, Any] | None]:
    """Each condition of `LEVEL_TABLE` -> the values for its reason, or None when it does not hold."""
    ids = {f.id for f in flags}
    enhancing = "ceus-enhancement" in ids
    kinetic = [f for f in flags if f.kinetic]
    other = [f for f in flags if f.category != "ceus"]
    ceus_other = [f for f in flags if f.category == "ceus" and f.id != "ceus-enhancement" and not f.kinetic]
    strong = [f for f in other if f.strong]
    avena = sorted({f.avena for f in flags if f.avena})

    def when(ok: bool, **values: Any) -> dict[str, Any] | None:
        return values if ok else None

    negative = ceus_non_enhancing and not enhancing
    return {
        "enhancing-with-kinetics": when(enhancing and bool(kinetic),
                                        kinetic=", ".join(f.short for f in kinetic)),
        "enhancing-plus-flag": when(enhancing and bool(other or ceus_other),
                                    further=", ".join(f.short for f in ceus_other + other)),
        "avena": when(len(avena) >= AVENA_THRESHOLD, n_avena=len(avena), avena=", ".join(avena)),
        "enhancing": when(enhancing),
        "mass-outside-lumen": when("us-extraluminal-mass" in ids),
        "two-strong-flags": when(len(strong) >= 2, n_strong=len(strong),
                                 strong=", ".join(f.short for f in strong)),
        "two-flags-without-ceus": when(not ceus_non_enhancing and len(other) >= 2, n_other=len(other)),
        "non-enhancing": when(negative, fewer=(f"; {_count(len(other), 'clinical/ultrasound red flag')}, "
                                               "fewer than 2 strong ones and no mass" if other else "")),
        "benign-clinical-picture": when(not flags and bool(bland_support), support="; ".join(bland_support)),
        "too-little-known": when(True, only=(f" (only {_count(len(other), 'red flag')} and no assessable "
                                             "CEUS)"
                                             if other else " (no red flag among the inputs, but no "
                                             "assessable CEUS and no clinical picture that supports a bland "
                                             "thrombus)")),
    }


def _count(n: int, noun: str) -> str:
    """``1 red flag``, ``2 red flags``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def combine_flags(flag_ids: Collection[str], ceus_non_enhancing: bool = False,
                  bland_support: Collection[str] = ()) -> tuple[str, list[str]]:
    """The level of suspicion from a set of red-flag ids (`LEVEL_TABLE`).

    Parameters
    ----------
    flag_ids : collection of str
        Ids from `RED_FLAG_RULES` that are present.
    ceus_non_enhancing : bool
        True when CEUS assessed the intraluminal material and it did not
        enhance (ignored when ``ceus-enhancement`` is among the flags).
    bland_support : collection of str
        Sentences from the clinical picture that positively support a benign
        cause (improving on anticoagulation, an acute provoked thrombosis with a
        raised D-dimer, a cyst, compression by an artery), given only when the
        ultrasound recorded no mass.  They allow "low" without CEUS, and only
        with no red flag at all.

    Returns
    -------
    (level, reasons)
        ``level`` is one of `LEVELS`; ``reasons`` are the reasons of the rows
        of that level that hold.
    """
    flags = [RED_FLAG_RULES[f] for f in flag_ids if f in RED_FLAG_RULES]
    held = _level_conditions(flags, ceus_non_enhancing, bland_support)
    level = next(floor for name, floor, _ in LEVEL_TABLE if held[name] is not None)
    reasons = [reason.format(**values) for name, floor, reason in LEVEL_TABLE
               if floor == level and (values := held[name]) is not None]
    if level == "indeterminate" or level == "low":
        reasons = reasons[:1]
    return level, reasons


# ----------------------------------------------------------------------------------------------------
# facts from the inputs


def _get(m: Mapping[str, Any] | None, key: str) -> Any:
    return m.get(key) if isinstance(m, Mapping) else None


def _ceus_state(findings: Mapping[str, Any] | None) -> str | None:
    """"enhancing", "non-enhancing" or None (no CEUS, or not assessable)."""
    value = _get(findings, "intraluminal_enhancement")
    if value is True:
        return "enhancing"
    if value is False:
        return "non-enhancing"
    return None


def _evidence_text(findings: Mapping[str, Any] | None, key: str, fallback: str) -> str:
    """The findings' own sentence for `key` with its number, or `fallback`."""
    ev = _get(_get(findings, "evidence"), key)
    if not isinstance(ev, Mapping) or not ev.get("text"):
        return fallback
    text = str(ev["text"]).rstrip(".")
    value = ev.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        stat = ev.get("statistic") or "value"
        unit = ev.get("unit")
        unit_s = "" if unit in (None, "", "1") else f" {unit}"
        thr = f"; threshold {ev['threshold']}" if ev.get("threshold") else ""
        text += f" ({stat} = {value:.3g}{unit_s}{thr})"
    return text


def _fmt_days(days: float) -> str:
    return fmt_days(days)


@dataclass
class _Facts:
    """What the inputs say, in the terms the rules use."""

    ceus: str | None
    flags: dict[str, str]  # flag id -> evidence
    facts: dict[str, str]  # fact id -> evidence (for the differential)


def _findings_flags(findings: Mapping[str, Any] | None, flags: dict[str, str], facts: dict[str, str]) -> None:
    state = _ceus_state(findings)
    if state == "non-enhancing":
        facts["ceus_non_enhancing"] = "CEUS: the intraluminal material does not enhance"
        return
    if state != "enhancing":
        return
    assert findings is not None
    flags["ceus-enhancement"] = _evidence_text(findings, "intraluminal_enhancement",
                                               "CEUS: the intraluminal material enhances")
    facts["ceus_enhancing"] = "CEUS: the intraluminal material enhances"
    wash_in = findings.get("wash_in")
    enhancement = findings.get("enhancement")
    if wash_in == "rapid":
        flags["ceus-rapid-wash-in"] = _evidence_text(findings, "wash_in", "CEUS wash-in: rapid")
    if enhancement == "hyper":
        flags["ceus-hyperenhancement"] = _evidence_text(findings, "enhancement", "CEUS enhancement: hyper")
    if findings.get("homogeneity") == "heterogeneous":
        flags["ceus-heterogeneous"] = _evidence_text(findings, "homogeneity",
                                                     "CEUS enhancement: heterogeneous")
    wash_out = findings.get("wash_out")
    if isinstance(wash_out, Mapping) and wash_out.get("present") is True:
        detail = ", ".join(str(wash_out[k]) for k in ("timing", "degree") if wash_out.get(k))
        onset = wash_out.get("onset_s")
        fallback = "CEUS: wash-out present" + (f" ({detail})" if detail else "") + (
            f", onset {onset:.3g} s" if isinstance(onset, int | float) else "")
        flags["ceus-wash-out"] = _evidence_text(findings, "wash_out", fallback)
    necrosis = findings.get("necrosis_percent")
    if isinstance(necrosis, int | float) and necrosis >= NECROSIS_FLAG_PERCENT:
        flags["ceus-necrosis"] = _evidence_text(
            findings, "necrosis_percent", f"CEUS: about {necrosis:.0f} % of the lesion does not enhance")
        facts["necrosis"] = f"CEUS: about {necrosis:.0f} % necrosis"
    kinetic = [k for k in flags if RED_FLAG_RULES[k].kinetic]
    if kinetic:
        facts["malignant_kinetics"] = "CEUS malignant kinetic pattern: " + ", ".join(
            RED_FLAG_RULES[k].short for k in kinetic)


#: Sites where a Baker (popliteal) cyst can lie.
BAKER_SITES = ("popliteal", "calf")
#: Sites that count as unusual for a DVT (proposed).
UNUSUAL_SITES = ("ivc", "gonadal", "renal", "other")
#: Primaries whose tumour thrombus grows into the IVC and its tributaries.
VENOUS_INVASIVE_PRIMARIES = ("renal", "adrenal", "hepatic")


def _primary(case: ClinicalCase) -> tuple[str | None, str]:
    """(site, where it is known from) of a known or suspected primary / adjacent organ mass."""
    us = case.ultrasound
    kc = case.known_cancer
    if kc is not None and kc.present is not False and kc.site is not None:
        status = f" ({kc.status})" if kc.status else ""
        return kc.site, f"known cancer: {kc.site}{status}"
    if us is not None and us.adjacent_organ_mass not in (None, "none"):
        return us.adjacent_organ_mass, f"ultrasound: {us.adjacent_organ_mass} mass beside the vein"
    return None, ""


def _case_flags(case: ClinicalCase | None, dd: Mapping[str, Any], wells: Mapping[str, Any],
                flags: dict[str, str], facts: dict[str, str]) -> None:
    if case is None:
        return
    chronic = case.symptom_duration_days is not None and case.symptom_duration_days >= CHRONIC_DAYS
    if case.symptom_duration_days is not None and not chronic:
        facts["acute"] = f"symptoms for {_fmt_days(case.symptom_duration_days)} (acute)"
    on_ac = case.d_dimer is not None and case.d_dimer.on_anticoagulation is True
    if chronic and dd.get("result") == "normal" and not on_ac:
        assert case.symptom_duration_days is not None
        flags["lab-normal-d-dimer-chronic"] = (
            f"symptoms for {_fmt_days(case.symptom_duration_days)} with a normal D-dimer ("
            + (f"{dd['value_ug_l_feu']:g} ug/L FEU, cut-off {dd['cutoff_ug_l_feu']:g}"
               if dd.get("value_ug_l_feu") is not None else "laboratory report") + ")")
        facts["chronic_normal_dd"] = flags["lab-normal-d-dimer-chronic"]
    if dd.get("result") == "raised" and not case.pregnant:
        facts["raised_dd"] = (
            f"D-dimer raised ({dd['value_ug_l_feu']:g} ug/L FEU > {dd['cutoff_ug_l_feu']:g})"
            if dd.get("value_ug_l_feu") is not None else "D-dimer raised (laboratory report)")
    if case.recurrence:
        flags["clin-recurrence"] = "recurrent thrombosis reported"
    if case.unprovoked and case.age_years is not None and case.age_years < YOUNG_YEARS:
        flags["clin-unprovoked-young"] = f"unprovoked, age {case.age_years:g} years"
    if case.unprovoked is False:
        facts["provoked"] = "provoked thrombosis"
    if case.site in UNUSUAL_SITES:
        flags["clin-unusual-site"] = f"site: {case.vein or case.site}"
    us = case.ultrasound
    if us is not None:
        compressed = us.compressed_by()
        cyst = us.lesion_content == "cystic" and (us.thrombus_seen is False or case.site in BAKER_SITES)
        if cyst:
            facts["cystic_lesion"] = ("ultrasound: cystic lesion"
                                      + (", no thrombus in the vein" if us.thrombus_seen is False else ""))
        named = (("mass" + (f" ({us.lesion_content})" if us.lesion_content else ""), us.mass),
                 ("extraluminal component", us.extraluminal_component),
                 ("compression of the vein by a mass", compressed == "mass"))
        parts = [name for name, v in named if v]
        if parts and not cyst:
            flags["us-extraluminal-mass"] = "ultrasound: " + ", ".join(parts)
            if us.mass or us.extraluminal_component:
                facts["mass"] = "ultrasound: " + ", ".join(
                    p for p in parts if not p.startswith("compression"))
        if cyst or (not us.mass and not us.extraluminal_component and compressed != "mass" and (
                us.mass is False or compressed == "artery")):
            facts["no_mass"] = "ultrasound: no solid mass and no extraluminal component"
        if us.extraluminal_component and not cyst:
            facts["extraluminal"] = "ultrasound: extraluminal component"
        if us.extraluminal_component is False:
            facts["no_extraluminal"] = "ultrasound: no extraluminal component"
        if compressed == "mass" and not cyst:
            facts["compression"] = "ultrasound: the vein is compressed by a mass"
        if compressed == "artery":
            facts["artery_compression"] = "ultrasound: the vein is compressed by an artery"
        if us.thrombus_seen is False:
            facts["no_thrombus"] = "ultrasound: no thrombus in the vein"
        if us.post_thrombotic_changes:
            facts["post_thrombotic"] = "ultrasound: post-thrombotic changes"
        if us.vein_expansion:
            flags["us-vein-expansion"] = "ultrasound: the vein is expanded"
            facts["vein_expansion"] = flags["us-vein-expansion"]
        if us.heterogeneous_mass:
            flags["us-heterogeneous-mass"] = "ultrasound: heterogeneous mass"
            facts["heterogeneous_mass"] = flags["us-heterogeneous-mass"]
        if us.arterial_waveform:
            flags["us-arterial-waveform"] = "colour Doppler: arterial waveform inside the lesion"
            facts["arterial_flow"] = flags["us-arterial-waveform"]
        elif us.internal_color_doppler_flow:
            flags["us-internal-colour-flow"] = ("colour Doppler: flow inside the lesion "
                                                "(waveform not arterial or not reported)")
    ac = case.anticoagulation
    if ac is not None and ac.response is not None:
        dur = f" after {_fmt_days(ac.duration_days)}" if ac.duration_days is not None else ""
        drug = f" ({ac.drug})" if ac.drug else ""
        # Unchanged is the usual course of a post-thrombotic vein: it counts as refractory only
        # over a stated period and together with a mass or an atypical feature.
        atypical = sorted(RED_FLAG_RULES[k].short for k in flags if k in ATYPICAL_FLAGS)
        if ac.response == "worse":
            flags["clin-refractory-anticoagulation"] = f"anticoagulation{drug}: worse{dur}"
        elif (ac.response == "unchanged" and ac.duration_days is not None
              and ac.duration_days >= ANTICOAG_MIN_DAYS and atypical):
            flags["clin-refractory-anticoagulation"] = (f"anticoagulation{drug}: unchanged{dur}, with "
                                                        + ", ".join(atypical))
        elif ac.response == "improved":
            facts["improved"] = f"improving on anticoagulation{drug}{dur}"
        if "clin-refractory-anticoagulation" in flags:
            facts["refractory"] = flags["clin-refractory-anticoagulation"]
    if wells.get("two_level") == "likely" and wells_two_level(wells["points_range"][0]) == "likely":
        facts["wells_likely"] = f"Wells {wells['points']} points: DVT likely"
    if case.thrombophilia_screen == "abnormal":
        facts["thrombophilia"] = "thrombophilia screen abnormal"
    kc = case.known_cancer
    if (case.wells is not None and case.wells.active_cancer) or (
            kc is not None and kc.present is not False and kc.status == "active"):
        facts["active_cancer"] = "active cancer"
    primary, where = _primary(case)
    if primary in VENOUS_INVASIVE_PRIMARIES:
        facts["invasive_primary"] = where
    elif primary == "uterine":
        facts["uterine_mass"] = where
    elif primary is not None:
        facts["other_primary"] = where
    if case.sex == "female":
        facts["female"] = "female"
    elif case.sex == "male":
        facts["male"] = "male"
    site_name = case.vein or case.site
    if case.site == "ivc":
        facts["site_ivc"] = f"site: {site_name}"
    if case.site in ILIAC_SITES:
        facts["site_iliac"] = f"site: {site_name}"
        if case.side == "left" and case.site == "common-iliac":
            facts["site_left_common_iliac"] = f"site: left {site_name}"
        elif case.side == "left" and case.site == "iliac":
            facts["site_iliac_left"] = f"site: left {site_name} (segment not given)"
    if case.side == "right":
        facts["side_right"] = "right side"
    if case.site in ("femoral", "popliteal", "calf"):
        facts["site_peripheral"] = f"site: {site_name} (far from a renal, hepatic or adrenal primary)"
    if case.site in BAKER_SITES:
        facts["site_popliteal"] = f"site: {site_name}"
    elif case.site is not None:
        facts["site_not_popliteal"] = f"site: {site_name}: no Baker cyst there"
    if case.site is not None and case.site not in ILIAC_SITES and case.site != "femoral":
        facts["site_not_iliofemoral"] = f"site: {site_name}, not iliofemoral"
    if case.site in ("external-iliac", "internal-iliac"):
        facts["site_not_common_iliac"] = f"site: {site_name}, not the common iliac vein"


def _bland_support(f: _Facts, case: ClinicalCase | None) -> list[str]:
    """Facts of the clinical picture that positively support a benign cause (see `combine_flags`).

    Given only when the ultrasound recorded no solid mass and no extraluminal component.
    """
    if case is None or "no_mass" not in f.facts:
        return []
    out = [f.facts[k] for k in ("improved", "cystic_lesion", "artery_compression") if k in f.facts]
    if "acute" in f.facts and "raised_dd" in f.facts and ("wells_likely" in f.facts or "provoked" in f.facts):
        out.append("an acute provoked or Wells-likely thrombosis with a raised D-dimer")
    return out


def _facts(findings: Mapping[str, Any] | None, case: ClinicalCase | None,
           dd: Mapping[str, Any], wells: Mapping[str, Any]) -> _Facts:
    flags: dict[str, str] = {}
    facts: dict[str, str] = {}
    _findings_flags(findings, flags, facts)
    _case_flags(case, dd, wells, flags, facts)
    return _Facts(ceus=_ceus_state(findings), flags=flags, facts=facts)


# ----------------------------------------------------------------------------------------------------
# differential


@dataclass(frozen=True)
class Candidate:
    """One entry of the differential: prior weight and weighted facts."""

    id: str
    name: str
    prior: float
    support: tuple[tuple[str, float], ...]
    against: tuple[tuple[str, float], ...]
    source: str


DIFFERENTIAL: tuple[Candidate, ...] = (
    Candidate("ddx-bland-dvt", "Bland deep-vein thrombosis", 1.0,
              (("ceus_non_enhancing", 3), ("improved", 2), ("raised_dd", 1), ("wells_likely", 1),
               ("thrombophilia", 1), ("acute", 0.5), ("post_thrombotic", 1), ("provoked", 0.5)),
              (("ceus_enhancing", 3), ("refractory", 1.5), ("chronic_normal_dd", 1), ("mass", 1),
               ("heterogeneous_mass", 1), ("arterial_flow", 1), ("no_thrombus", 2), ("cystic_lesion", 1)),
              f"{SRC_META} (no enhancement = bland thrombus); {SRC_WELLS}"),
    Candidate("ddx-tumour-thrombus",
              "Tumour thrombus from a distant primary (renal, hepatocellular, adrenal)", 0.0,
              (("ceus_enhancing", 2), ("active_cancer", 1.5), ("site_ivc", 1), ("vein_expansion", 0.5),
               ("arterial_flow", 0.5), ("invasive_primary", 3), ("other_primary", 1), ("uterine_mass", 0.5)),
              (("ceus_non_enhancing", 3), ("site_peripheral", 1), ("improved", 1)),
              f"Cancer Imaging 2019, doi:10.1186/s40644-019-0265-x; {SRC_AVENA}; {SRC_DIFF}"),
    Candidate("ddx-venous-leiomyosarcoma", "Primary venous leiomyosarcoma", 0.0,
              (("ceus_enhancing", 2), ("malignant_kinetics", 1), ("necrosis", 0.5), ("mass", 1),
               ("heterogeneous_mass", 1), ("female", 0.5), ("refractory", 0.5), ("chronic_normal_dd", 0.5),
               ("site_ivc", 0.5)),
              (("ceus_non_enhancing", 3), ("improved", 1), ("invasive_primary", 1.5), ("cystic_lesion", 2)),
              f"{SRC_DIFF} (women ~3:1, median age ~52, IVC > iliac/femoral); {SRC_INDEX}; "
              "Mingoli et al. 1996"),
    Candidate("ddx-intravascular-leiomyomatosis", "Intravascular leiomyomatosis", -0.5,
              (("female", 0.5), ("ceus_enhancing", 1.5), ("site_ivc", 0.5), ("site_iliac", 0.5),
               ("no_extraluminal", 0.5), ("uterine_mass", 1.5)),
              (("male", 3), ("ceus_non_enhancing", 3), ("extraluminal", 1), ("invasive_primary", 1.5),
               ("cystic_lesion", 2)),
              f"{SRC_DIFF} (women, uterine origin, intraluminal, non-invasive)"),
    Candidate("ddx-extrinsic-compression", "Extrinsic compression by a sarcoma or lymphadenopathy", 0.0,
              (("compression", 1.5), ("mass", 1), ("extraluminal", 0.5), ("refractory", 0.5),
               ("other_primary", 1)),
              (("no_mass", 1), ("ceus_enhancing", 0.5), ("artery_compression", 1)),
              SRC_DIFF),
    Candidate("ddx-vascular-tumour",
              "Other vascular tumour (intravascular epithelioid haemangioma, angiosarcoma)", -0.5,
              (("ceus_enhancing", 1.5), ("malignant_kinetics", 0.5), ("arterial_flow", 0.5)),
              (("ceus_non_enhancing", 3), ("invasive_primary", 1)),
              SRC_DIFF),
    Candidate("ddx-may-thurner",
              "May-Thurner syndrome (left common iliac vein compressed by the right common iliac artery)",
              0.0,
              (("site_left_common_iliac", 2.5), ("site_iliac_left", 2), ("artery_compression", 2),
               ("female", 0.5)),
              (("side_right", 2), ("site_not_iliofemoral", 3), ("site_not_common_iliac", 1), ("mass", 1.5),
               ("ceus_enhancing", 1), ("compression", 1)),
              f"{SRC_DIFF}; the compression lies at the left common iliac vein"),
    Candidate("ddx-baker-cyst", "Baker cyst (ruptured or dissecting)", 0.0,
              (("site_popliteal", 2), ("cystic_lesion", 2), ("no_thrombus", 1)),
              (("site_not_popliteal", 5), ("ceus_enhancing", 2)),
              f"{SRC_DIFF}; a Baker cyst lies at the knee: popliteal fossa, dissecting into the calf"),
    Candidate("ddx-venous-aneurysm", "Venous aneurysm", -0.5,
              (("vein_expansion", 1), ("site_popliteal", 0.5)),
              (("mass", 1), ("ceus_enhancing", 1)),
              SRC_DIFF),
)

#: Weak facts (sex): they may order entities but never lift one above bland DVT on their own.
WEAK_FACTS = frozenset({"female", "male"})
#: Entities that are neoplasms (the leading one decides where the recommendations refer).
NEOPLASMS = ("ddx-tumour-thrombus", "ddx-venous-leiomyosarcoma", "ddx-intravascular-leiomyomatosis",
             "ddx-extrinsic-compression", "ddx-vascular-tumour")
#: Neoplasms for which a sarcoma team (and FNCLCC grading) is the referral.
SARCOMA_GRADED = ("ddx-venous-leiomyosarcoma", "ddx-extrinsic-compression", "ddx-vascular-tumour")


def rank_differential(facts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Score and rank `DIFFERENTIAL` from fact ids (see the module docstring).

    Weak support (`WEAK_FACTS`, sex) counts in full only where the rest of the evidence already
    puts the entity above bland DVT; otherwise it is capped at bland DVT's score (ties rank in
    catalogue order, bland DVT first), so sex never lifts an entity above bland DVT on its own.
    """
    scored = []
    for order, cand in enumerate(DIFFERENTIAL):
        score, weak = cand.prior, 0.0
        support, against = [], []
        for fact, weight in cand.support:
            if fact in facts:
                if fact in WEAK_FACTS:
                    weak += weight
                else:
                    score += weight
                support.append(f"{facts[fact]} (+{weight:g})")
        for fact, weight in cand.against:
            if fact in facts:
                score -= weight
                against.append(f"{facts[fact]} (-{weight:g})")
        scored.append((cand, order, score, weak, support, against))
    bland = next(sc for c, _, sc, w, _, _ in scored if c.id == "ddx-bland-dvt") + next(
        w for c, _, _, w, _, _ in scored if c.id == "ddx-bland-dvt")
    rows = []
    for cand, order, score, weak, support, against in scored:
        total = score + weak
        if cand.id != "ddx-bland-dvt" and weak > 0 and score <= bland < total:
            total = bland
        rows.append((-total, order, {"id": cand.id, "name": cand.name, "score": total, "prior": cand.prior,
                                     "support": support, "against": against, "source": cand.source}))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [{**row, "rank": rank} for rank, (_, _, row) in enumerate(rows, start=1)]


# ----------------------------------------------------------------------------------------------------
# recommendations


def _fnclcc_necrosis(findings: Mapping[str, Any] | None, ceus: str | None) -> dict[str, Any] | None:
    necrosis = _get(findings, "necrosis_percent")
    if ceus != "enhancing" or not isinstance(necrosis, int | float):
        return None
    score = 0 if necrosis <= 0 else (1 if necrosis < 50 else 2)
    return {"necrosis_percent": float(necrosis), "component_score": score,
            "label": "estimate from imaging, not histology: only pathology can grade the tumour",
            "proposed": True, "source": f"{SRC_FNCLCC}; pre-filling it from imaging: {SRC_HEURISTIC}"}


def _leading_neoplasm(differential: list[dict[str, Any]]) -> str | None:
    """The highest-ranked entity of `NEOPLASMS` in the ranked differential."""
    return next((d["id"] for d in differential if d["id"] in NEOPLASMS), None)


_STAGING_TEAMS = {
    "renal": "urology and oncology", "adrenal": "endocrine surgery/urology and oncology",
    "hepatic": "hepatology/hepatobiliary surgery and oncology", "uterine": "gynaecological oncology",
    "testicular": "urology and oncology", "retroperitoneal": "oncology (retroperitoneal mass)",
    "other": "oncology",
}


def _recommend(level: str, f: _Facts, findings: Mapping[str, Any] | None, case: ClinicalCase | None,
               wells: Mapping[str, Any], dd: Mapping[str, Any],
               differential: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    leading = _leading_neoplasm(differential or [])
    primary_led = leading == "ddx-tumour-thrombus"
    primary_site = _primary(case)[0] if case is not None else None

    def add(id_: str, text: str, reason: str, source: str, proposed: bool = False) -> None:
        recs.append({"id": id_, "text": text, "reason": reason, "source": source, "proposed": proposed})

    suspect = level in ("high", "intermediate")
    if findings is None and case is None:
        add("rec-provide-inputs",
            "Provide a CEUS analysis (cine with lesion and reference ROIs) and/or a case file",
            "nothing was given to assess", SRC_HEURISTIC, proposed=True)
    why_not = _get(_get(findings, "not_assessable"), "intraluminal_enhancement")
    if f.ceus is None and why_not:
        add("rec-ceus", "Repeat CEUS of the intraluminal material in contrast mode, recording from before "
            "the injection through wash-in and wash-out (at least 60 s), with a reference ROI in adjacent "
            "muscle: enhancement indicates tumour, no enhancement a bland thrombus",
            "this CEUS could not tell whether the lesion enhances: "
            + str(why_not).removeprefix("not assessable: "), SRC_META)
    elif f.ceus is None and (f.flags or suspect or (
            level == "indeterminate" and (findings is not None or case is not None))):
        add("rec-ceus", "Perform CEUS of the intraluminal material, with a reference ROI in adjacent muscle: "
            "enhancement indicates tumour, no enhancement a bland thrombus",
            ("red flags without an assessable CEUS: " + ", ".join(f.flags)) if f.flags
            else "without an assessable CEUS the suspicion cannot be called low", SRC_META)
    if suspect:
        reason = ("suspicion " + level + ("; CEUS of the lumen cannot exclude a mass compressing the vein"
                                          if f.ceus == "non-enhancing" else ""))
        add("rec-cross-sectional-imaging",
            "Contrast-enhanced CT or MRI to characterise the lesion (intra- and extraluminal extent, wall "
            "invasion, a primary elsewhere) and to stage it", reason,
            f"{SRC_INDEX} (CECT confirmed and staged); {SRC_SARCOMA}")
        if primary_led:
            team = _STAGING_TEAMS.get(primary_site or "other", "oncology")
            where = f"the {primary_site} primary" if primary_site else "a primary elsewhere"
            add("rec-primary-staging",
                f"Refer to {team} for staging of {where} (CT of chest, abdomen and pelvis) and for the "
                "treatment of a tumour thrombus; tissue, if needed, as that team decides (not a biopsy of "
                "the thrombus before it)",
                "tumour thrombus from a known or suspected primary leads the differential",
                f"{SRC_RCC_IVC}; {SRC_DIFF}")
        else:
            add("rec-sarcoma-team", "Refer to a multidisciplinary sarcoma team, before biopsy or resection",
                f"suspicion {level} of a venous neoplasm", f"{SRC_SARCOMA}; {SRC_INDEX}")
        if not primary_led:
            if f.ceus == "enhancing":
                add("rec-biopsy",
                    "Image-guided biopsy of enhancing tissue (avoid the non-enhancing, necrotic part), "
                    "planned with the sarcoma team", "the lesion enhances on CEUS",
                    f"{SRC_SARCOMA}; targeting enhancing tissue: {SRC_HEURISTIC}", proposed=True)
            else:
                add("rec-biopsy", "Image-guided biopsy if cross-sectional imaging shows a mass, planned with "
                    "the sarcoma team", f"suspicion {level}", SRC_SARCOMA)
        if case is not None and case.anticoagulation is not None:
            add("rec-reassess-anticoagulation",
                "Reassess the anticoagulation with the team: a tumour does not respond to it, and a "
                "thrombotic component may still need treatment",
                "on anticoagulation while a neoplasm is suspected", SRC_CASE_SERIES)
    necro = _fnclcc_necrosis(findings, f.ceus)
    if necro is not None and suspect and leading in SARCOMA_GRADED:
        add("rec-fnclcc-necrosis",
            f"Imaging necrosis ~{necro['necrosis_percent']:.0f} %: the FNCLCC necrosis component would be "
            f"{necro['component_score']} (estimate from imaging only; pre-fill for the pathologist, who "
            "grades on histology)", "necrosis estimated on CEUS",
            f"{SRC_FNCLCC}; pre-filling it from imaging: {SRC_HEURISTIC}", proposed=True)
    if not suspect and ("ceus_non_enhancing" in f.facts or "improved" in f.facts
                        or ("wells_likely" in f.facts and "raised_dd" in f.facts)):
        add("rec-anticoagulation-bland", "Manage as DVT per local protocol; reassess the response to "
            "anticoagulation and re-image (with CEUS) if the leg does not improve or the 'thrombus' persists",
            "findings fit a bland thrombus", f"{SRC_WELLS}; re-imaging on failure: {SRC_CASE_SERIES}")
    if findings is not None and _get(findings, "reference_roi") is None and f.ceus is not None:
        add("rec-reference-roi",
            "Draw a reference ROI (adjacent muscle or the vein wall at the same depth) so wash-in, "
            "enhancement degree and wash-out can be graded", "no reference ROI in the CEUS analysis",
            f"CEUS descriptors are relative to a reference tissue; the choice of reference: {SRC_HEURISTIC}",
            proposed=True)
    if case is not None:
        if case.ultrasound is None:
            add("rec-doppler-features", "Record the B-mode and colour Doppler features (mass, extraluminal "
                "component, vein expansion, arterial waveform inside the 'thrombus')",
                "no ultrasound features in the case file", f"{SRC_CASE_SERIES}; {SRC_DODD}")
        if not dd.get("given"):
            add("rec-d-dimer",
                "Measure D-dimer and read it against the age-adjusted cut-off (age x 10 ug/L FEU over 50); "
                "a normal value with a chronic persistent 'thrombus' is a red flag",
                "no D-dimer in the case file", f"{dd['source']}; chronic case: {SRC_HEURISTIC}")
        chronic = case.symptom_duration_days is not None and case.symptom_duration_days >= CHRONIC_DAYS
        if wells.get("missing") and not wells.get("determined") and not chronic:
            lo, hi = wells["points_range"]
            missing = "; ".join(_WELLS_WORDING[m].lower() for m in wells["missing"])
            add("rec-complete-wells", "Record the missing Wells items: " + missing,
                f"the Wells category is undetermined: anything from {lo} to {hi} points", SRC_WELLS)
        if case.pregnant:
            for rec in recs:
                words = rec["text"].lower()
                if "contrast" in words or "ceus" in words:
                    rec["text"] += PREGNANCY_CONTRAST_CAVEAT
                    rec["source"] += f"; {SRC_CONTRAST_PREGNANCY}"
    return recs


# ----------------------------------------------------------------------------------------------------
# assessment


def _missing(findings: Mapping[str, Any] | None, case: ClinicalCase | None, wells: Mapping[str, Any],
             dd: Mapping[str, Any]) -> list[str]:
    missing: list[str] = []
    if findings is None:
        missing.append("no CEUS analysis")
    else:
        if _ceus_state(findings) is None:
            missing.append("CEUS: intraluminal enhancement not assessable")
        for item in findings.get("missing") or []:
            missing.append(f"CEUS: {item}")
    if case is None:
        missing.append("no case file")
        return missing
    chronic = case.symptom_duration_days is not None and case.symptom_duration_days >= CHRONIC_DAYS
    for item in ([] if chronic else wells["missing"]):  # Wells is for a suspected acute DVT
        missing.append(f"Wells item not given: {_WELLS_WORDING[item]}")
    if not dd.get("given"):
        missing.append("D-dimer not given")
    for name, value in (("age", case.age_years), ("sex", case.sex),
                        ("symptom duration", case.symptom_duration_days),
                        ("ultrasound features", case.ultrasound), ("site", case.site)):
        if value is None:
            missing.append(f"{name} not given")
    if case.anticoagulation is None or case.anticoagulation.response is None:
        missing.append("response to anticoagulation not given")
    return missing


def _clinical_summary(case: ClinicalCase | None, dd: Mapping[str, Any],
                      wells: Mapping[str, Any]) -> str | None:
    if case is None:
        return None
    who = []
    if case.age_years is not None:
        who.append(f"{case.age_years:g}-year-old")
    if case.sex is not None:
        who.append({"female": "woman", "male": "man", "other": "patient"}[case.sex])
    elif who:
        who.append("patient")
    parts = [" ".join(who)] if who else []
    if case.pregnant:
        parts.append("pregnant")
    primary, where = _primary(case)
    if primary is not None:
        parts.append(where)
    if case.symptom_duration_days is not None:
        parts.append(f"symptoms for {_fmt_days(case.symptom_duration_days)}")
    ac = case.anticoagulation
    if ac is not None and ac.response is not None:
        parts.append(f"{ac.response} on anticoagulation")
    if dd.get("result"):
        on_ac = case.d_dimer is not None and case.d_dimer.on_anticoagulation
        parts.append(f"D-dimer {dd['result']}" + (" (measured on anticoagulation)" if on_ac else ""))
    chronic = case.symptom_duration_days is not None and case.symptom_duration_days >= CHRONIC_DAYS
    # Wells applies to a suspected acute DVT: an incomplete one is left out of a chronic presentation.
    if not wells["missing"] or (wells["determined"] and wells["items"]):
        parts.append(f"Wells {wells['points']} ({wells['three_level']})")
    elif wells["items"] and not chronic:
        lo, hi = wells["points_range"]
        given = len(WELLS_ITEMS) - len(wells["missing"])
        parts.append(f"Wells {wells['points']} from {given} of {len(WELLS_ITEMS)} items "
                     f"(could be {lo} to {hi})")
    if case.site is not None:
        side = f"{case.side} " if case.side and case.side != "bilateral" else ""
        parts.append(f"site: {side}{case.vein or case.site}")
    return ", ".join(parts) if parts else None


def assess(findings: Mapping[str, Any] | None, case: ClinicalCase | None) -> dict[str, Any]:
    """Decision support from CEUS findings and/or a clinical case.

    Parameters
    ----------
    findings : Mapping, optional
        The CEUS findings dict (``ceuskit.findings``; see results.json
        ``findings``).  None when no CEUS analysis exists.
    case : ClinicalCase, optional
        The clinical case.  None when no case file was given.

    Returns
    -------
    dict
        ``suspect_neoplasm`` (bool), ``level`` (one of `LEVELS`),
        ``reasons``, ``red_flags`` (id, text, evidence, source, proposed,
        category), ``combination_rule``, ``avena_adapted``, ``differential``
        (ranked; id, name, rank, score, support, against, source),
        ``recommendations`` (id, text, reason, source, proposed), ``wells``,
        ``d_dimer``, ``fnclcc_necrosis_estimate``, ``clinical_summary``,
        ``missing``, ``inputs_used``, ``disclaimer``.
    """
    wells = wells_score(case)
    dd = d_dimer_assessment(case)
    f = _facts(findings, case, dd, wells)
    level, reasons = combine_flags(f.flags, ceus_non_enhancing=f.ceus == "non-enhancing",
                                   bland_support=_bland_support(f, case))
    if findings is None and case is None:
        reasons = ["nothing to assess: neither CEUS findings nor a case was given"]
    red_flags = []
    for rule in _RULES:  # catalogue order keeps the output stable
        if rule.id in f.flags:
            red_flags.append({"id": rule.id, "text": rule.text, "short": rule.short,
                              "evidence": f.flags[rule.id], "source": rule.source, "proposed": rule.proposed,
                              "category": rule.category, "strong": rule.strong})
    avena = sorted({a for i in f.flags if (a := RED_FLAG_RULES[i].avena) is not None})
    differential = rank_differential(f.facts)
    inputs = (["ceus"] if findings is not None else []) + (["case"] if case is not None else [])
    return {
        "suspect_neoplasm": level in ("high", "intermediate"),
        "level": level,
        "reasons": reasons,
        "red_flags": red_flags,
        "combination_rule": {"text": COMBINATION_RULE_TEXT, "proposed": True,
                             "source": f"{SRC_HEURISTIC}; A-VENA adapted from {SRC_AVENA}"},
        "avena_adapted": {"count": len(avena), "items": avena, "threshold": AVENA_THRESHOLD, "proposed": True,
                          "source": f"adapted from {SRC_AVENA}: AFP and adjacent tumour replaced by mass "
                                    "outside the lumen and no response to anticoagulation"},
        "ceus": f.ceus or "not assessed",
        "differential": differential,
        "differential_note": "ranked by a weighted count of the evidence for and against (ceuskit heuristic; "
                             "weights in ceuskit.clinical.rules.DIFFERENTIAL)",
        "recommendations": _recommend(level, f, findings, case, wells, dd, differential),
        "wells": wells,
        "d_dimer": dd,
        "fnclcc_necrosis_estimate": _fnclcc_necrosis(findings, f.ceus),
        "clinical_summary": _clinical_summary(case, dd, wells),
        "missing": _missing(findings, case, wells, dd),
        "inputs_used": inputs,
        "disclaimer": DISCLAIMER,
    }


def _ceus_sentence(findings: Mapping[str, Any] | None) -> str:
    state = _ceus_state(findings)
    if findings is None:
        return "No CEUS analysis was available."
    if state is None:
        return "CEUS: the intraluminal material could not be assessed."
    if state == "non-enhancing":
        return "CEUS: the intraluminal material does not enhance (bland-thrombus pattern)."
    details = []
    if findings.get("wash_in"):
        details.append(f"{findings['wash_in']} wash-in")
    if findings.get("enhancement") and findings.get("enhancement") != "none":
        details.append(f"{findings['enhancement']}-enhancement")
    if findings.get("homogeneity"):
        details.append(f"{findings['homogeneity']} enhancement")
    wo = findings.get("wash_out")
    if isinstance(wo, Mapping) and wo.get("present") is True:
        details.append(" ".join(str(wo[k]) for k in ("timing", "degree") if wo.get(k)) + " wash-out")
    elif isinstance(wo, Mapping) and wo.get("present") is False:
        details.append("no wash-out")
    text = "CEUS: the intraluminal material enhances"
    if details:
        text += " (" + ", ".join(" ".join(d.split()) for d in details) + ")"
    necrosis = findings.get("necrosis_percent")
    if isinstance(necrosis, int | float):
        text += f"; about {necrosis:.0f} % of the lesion does not enhance (necrosis estimate)"
    return text + "."


def _lower_first(text: str) -> str:
    """A name inside a sentence: ``Primary venous ...`` -> ``primary venous ...``.

    Acronyms (``CEUS``) and eponyms (``Baker cyst``, ``May-Thurner syndrome``) keep their capitals.
    """
    first = text.split(" ", 1)[0]
    if (len(text) > 1 and text[:2].isupper()) or first in _EPONYMS:
        return text
    return text[:1].lower() + text[1:]


#: First words of differential names that are proper names.
_EPONYMS = frozenset({"Baker", "May-Thurner"})


def reason_groups(red_flags: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The red flags as reasons a reader counts: every CEUS flag of one examination is one reason.

    The rules raise one flag per CEUS descriptor (enhancement, then the kinetic
    pattern and necrosis it qualifies); they all come from one test of one
    lesion, so they are presented as one reason, the enhancement qualified by
    its pattern.  Every other flag is a reason of its own.  The level does not
    change: `combine_flags` still weighs each flag.

    Parameters
    ----------
    red_flags : list of mapping
        ``assessment["red_flags"]`` (id, text, short, evidence, source, category).

    Returns
    -------
    list of dict
        ``ids``, ``category``, ``short`` (a few words), ``text`` (a sentence),
        ``evidence`` (one per flag) and ``sources`` (unique, in order).
    """
    ceus = [f for f in red_flags if f.get("category") == "ceus"]
    groups: list[dict[str, Any]] = []
    if ceus:
        qualifiers = [str(f.get("short") or f["id"]) for f in ceus if f["id"] != "ceus-enhancement"]
        enhancing = any(f["id"] == "ceus-enhancement" for f in ceus)
        kinetic = [f for f in ceus if f["id"] in _KINETIC_IDS]
        tail = (qualifiers[0] if len(qualifiers) == 1
                else ", ".join(qualifiers[:-1]) + " and " + qualifiers[-1]) if qualifiers else ""
        if not enhancing:
            short = "CEUS: " + tail
        elif kinetic:
            short = "CEUS enhancement with a malignant pattern"
        else:
            short = "CEUS enhancement" + (f" with {tail}" if tail else "")
        sources: list[str] = []
        for f in ceus:
            source = str(f.get("source") or "")
            # One reference cited for several descriptors ("...; extrapolated) (mosaic = ...)") once.
            cited = source.split(") (")[0] + (")" if ") (" in source else "")
            if cited and cited not in sources:
                sources.append(cited)
        groups.append({"ids": [f["id"] for f in ceus], "category": "ceus", "short": short,
                       "text": "The intraluminal material enhances on CEUS (tumour in vein, not bland "
                               "thrombus)" + (f", with {tail}" if qualifiers else "") + ".",
                       "evidence": [str(f.get("evidence") or "") for f in ceus], "sources": sources})
    for f in red_flags:
        if f.get("category") == "ceus":
            continue
        groups.append({"ids": [f["id"]], "category": f.get("category"),
                       "short": str(f.get("short") or f["id"]), "text": str(f.get("text") or f["id"]),
                       "evidence": [str(f.get("evidence") or "")],
                       "sources": [str(f.get("source") or "")]})
    return groups


def summary_paragraph(findings: Mapping[str, Any] | None, assessment: Mapping[str, Any]) -> str:
    """One paragraph for the top of the report: what was found, the level, why, the disclaimer.

    Parameters
    ----------
    findings : Mapping, optional
        The CEUS findings (None without CEUS).
    assessment : Mapping
        The output of `assess`.
    """
    parts = [_ceus_sentence(findings)]
    if assessment.get("clinical_summary"):
        parts.append(f"Clinical: {assessment['clinical_summary']}.")
    else:
        parts.append("No clinical case was given.")
    level = assessment["level"]
    reasons = "; ".join(assessment.get("reasons") or [])
    parts.append(f"Suspicion of a venous neoplasm: {level.upper()}, because {reasons}.")
    groups = reason_groups(assessment.get("red_flags") or [])
    if groups:
        names = "; ".join(g["short"] for g in groups)
        parts.append(f"Reasons ({len(groups)}, the CEUS findings counted as one): {names}.")
    ddx = assessment.get("differential") or []
    if ddx and assessment.get("inputs_used"):
        parts.append("Leading considerations: " + "; ".join(_lower_first(d["name"]) for d in ddx[:2]) + ".")
    recs = assessment.get("recommendations") or []
    if recs:
        parts.append("Suggested next step: " + _lower_first(recs[0]["text"].split(":")[0].rstrip(".")) + ".")
    parts.append(str(assessment.get("disclaimer") or DISCLAIMER))
    return " ".join(" ".join(parts).split())
