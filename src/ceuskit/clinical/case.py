"""The clinical case: what a clinician knows about the patient besides the cine.

A case file is YAML or JSON with the fields of `ClinicalCase`; every field is
optional, and a field that is absent means "not known" (the decision support
then lists it as missing rather than assuming a value).  Unknown fields are
refused so that a misspelt field never silently drops information.

D-dimer units
-------------
Laboratories report D-dimer in fibrinogen-equivalent units (FEU) or in
D-dimer units (DDU), and in ug/L, ng/mL, mg/L or ug/mL.  ceuskit converts
every value to ug/L FEU before comparing it with a cut-off:

* mass concentration: 1 mg/L = 1 ug/mL = 1000 ug/L; 1 ng/mL = 1 ug/L;
* FEU versus DDU: 1 DDU ~ 2 FEU (`FEU_PER_DDU`).  This is the conventional
  approximation (fibrinogen, ~340 kDa, is roughly twice the mass of the
  D-dimer fragment, ~195 kDa); the true ratio depends on the assay, so a
  converted value is an approximation and the report says so.

A unit that names neither FEU nor DDU is refused as ambiguous: the two differ
by a factor of about two, enough to move a value across the cut-off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ceuskit.errors import InputError

#: Conventional approximation: one D-dimer unit corresponds to about two
#: fibrinogen-equivalent units (fibrinogen ~340 kDa vs D-dimer fragment ~195 kDa).
FEU_PER_DDU = 2.0

#: Factor from each accepted mass-concentration unit to ug/L.
MASS_FACTORS_TO_UG_L: dict[str, float] = {"ug/L": 1.0, "ng/mL": 1.0, "mg/L": 1000.0, "ug/mL": 1000.0}

#: The accepted D-dimer units, exactly as they are written in a case file.
D_DIMER_UNITS: tuple[str, ...] = tuple(f"{m} {b}" for b in ("FEU", "DDU") for m in MASS_FACTORS_TO_UG_L)

FEU_NOTE = (
    f"DDU converted to FEU with the conventional approximation 1 DDU ~ {FEU_PER_DDU:g} FEU "
    "(assay-dependent; the converted value is approximate)"
)

CASE_EXAMPLES: tuple[str, ...] = ("index_case", "acute_bland_dvt")


def _canonical_unit(text: str) -> str:
    """Map a unit as typed to one of `D_DIMER_UNITS`, or raise a pydantic error.

    The micro sign is accepted for "u" and spacing and letter case are
    forgiven; everything else must match exactly.
    """
    cleaned = " ".join(text.replace("µ", "u").replace("μ", "u").split())
    by_key = {u.lower(): u for u in D_DIMER_UNITS}
    if cleaned.lower() in by_key:
        return by_key[cleaned.lower()]
    accepted = ", ".join(D_DIMER_UNITS)
    mass_only = {m.lower() for m in MASS_FACTORS_TO_UG_L}
    if cleaned.lower() in mass_only:
        raise PydanticCustomError(
            "d_dimer_unit_ambiguous",
            "unit '{unit}' is ambiguous: it says neither FEU nor DDU, which differ by a factor of about 2",
            {"unit": text, "fix": f"ask the laboratory which it reports and write one of {accepted}"},
        )
    raise PydanticCustomError(
        "d_dimer_unit_unknown",
        "unit '{unit}' is not a D-dimer unit ceuskit knows",
        {"unit": text, "fix": f"use one of {accepted}"},
    )


def d_dimer_to_ug_l_feu(value: float, unit: str) -> float:
    """Convert a D-dimer concentration to ug/L FEU.

    Parameters
    ----------
    value : float
        The concentration in `unit`.
    unit : str
        One of `D_DIMER_UNITS` (e.g. ``"mg/L FEU"``, ``"ng/mL DDU"``).

    Returns
    -------
    float
        The concentration in ug/L FEU.  From DDU the conventional factor
        `FEU_PER_DDU` is used, so the result is approximate.

    Raises
    ------
    ValueError
        If `unit` is not one of `D_DIMER_UNITS`.
    """
    if unit not in D_DIMER_UNITS:
        raise ValueError(f"unknown D-dimer unit {unit!r}; use one of {', '.join(D_DIMER_UNITS)}")
    mass, basis = unit.split(" ")
    factor = MASS_FACTORS_TO_UG_L[mass] * (FEU_PER_DDU if basis == "DDU" else 1.0)
    return float(value) * factor


#: Problems of a bad case file listed in its one-line error (the rest counted).
MAX_LISTED_PROBLEMS = 10


class _Strict(BaseModel):
    # No NaN or infinity: they are not JSON (PostgreSQL refuses them in a JSON column).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Anticoagulation(_Strict):
    """Anticoagulant treatment given for the presumed thrombosis."""

    drug: str | None = Field(default=None, max_length=100, title="Drug")
    duration_days: float | None = Field(default=None, ge=0, title="Duration of treatment (days)")
    response: Literal["improved", "unchanged", "worse"] | None = Field(
        default=None, title="Response of the symptoms and the thrombus")


class DDimer(_Strict):
    """A D-dimer result: a value with its unit, or only the laboratory's verdict."""

    value: float | None = Field(default=None, ge=0, title="Value")
    unit: str | None = Field(default=None, validate_default=True,
                             title="Unit (e.g. ug/L FEU, mg/L DDU)")
    result: Literal["normal", "raised"] | None = Field(default=None,
                                                       title="Laboratory's verdict")
    lab_cutoff: float | None = Field(default=None, gt=0,
                                     title="Laboratory cut-off (in the unit above)")
    on_anticoagulation: bool | None = Field(
        default=None, title="Measured while on anticoagulation (which lowers D-dimer)")

    @field_validator("unit")
    @classmethod
    def _unit(cls, unit: str | None, info: ValidationInfo) -> str | None:
        if unit is None:
            if info.data.get("value") is not None:
                raise PydanticCustomError(
                    "d_dimer_unit_missing", "a D-dimer value needs its unit",
                    {"fix": f"add unit: one of {', '.join(D_DIMER_UNITS)}"})
            return None
        return _canonical_unit(unit)

    @field_validator("lab_cutoff")
    @classmethod
    def _cutoff(cls, cutoff: float | None, info: ValidationInfo) -> float | None:
        if cutoff is not None and info.data.get("unit") is None:
            raise PydanticCustomError(
                "d_dimer_cutoff_unitless", "a laboratory cut-off needs the unit of the value",
                {"fix": "give value and unit together with lab_cutoff (the cut-off in the same unit)"})
        return cutoff

    def value_ug_l_feu(self) -> float | None:
        """The value converted to ug/L FEU, or None when no value was given."""
        if self.value is None or self.unit is None:
            return None
        return d_dimer_to_ug_l_feu(self.value, self.unit)

    def lab_cutoff_ug_l_feu(self) -> float | None:
        """The laboratory's cut-off converted to ug/L FEU, or None."""
        if self.lab_cutoff is None or self.unit is None:
            return None
        return d_dimer_to_ug_l_feu(self.lab_cutoff, self.unit)


def _item(title: str) -> Any:
    """An optional yes/no item: True = present, False = absent, None = not assessed."""
    return Field(default=None, title=title)


class WellsItems(_Strict):
    """The Wells DVT items (Wells, Lancet 1997;350:1795; NEJM 2003;349:1227).

    True = present, False = absent, None = not assessed.
    """

    active_cancer: bool | None = _item("Active cancer")
    paralysis_paresis_or_recent_cast: bool | None = _item(
        "Paralysis, paresis or recent plaster immobilisation of the leg")
    bedridden_or_major_surgery: bool | None = _item("Bedridden > 3 days or major surgery within 12 weeks")
    localized_tenderness: bool | None = _item("Localised tenderness along the deep veins")
    entire_leg_swollen: bool | None = _item("Entire leg swollen")
    calf_swelling_over_3cm: bool | None = _item(
        "Calf swelling > 3 cm versus the other leg (10 cm below the tibial tuberosity)")
    pitting_edema_symptomatic_leg: bool | None = _item("Pitting oedema confined to the symptomatic leg")
    collateral_superficial_veins: bool | None = _item("Collateral superficial (non-varicose) veins")
    previous_dvt: bool | None = _item("Previously documented DVT")
    alternative_diagnosis_as_likely: bool | None = _item("Alternative diagnosis at least as likely as DVT")


OrganMass = Literal["renal", "adrenal", "hepatic", "uterine", "retroperitoneal", "none"]
CancerSite = Literal["renal", "adrenal", "hepatic", "uterine", "testicular", "retroperitoneal", "other"]


class UltrasoundFindings(_Strict):
    """B-mode and colour Doppler findings reported by the sonographer.

    ``compression_of_vein: true`` (the older field) means
    ``compressing_structure: mass``; when both are given they must agree.
    """

    mass: bool | None = _item("Mass")
    extraluminal_component: bool | None = _item("Component outside the vein lumen")
    vein_expansion: bool | None = _item("Vein expanded")
    heterogeneous_mass: bool | None = _item("Heterogeneous mass")
    compression_of_vein: bool | None = _item(
        "Vein compressed by a mass (same as compressing structure: mass)")
    internal_color_doppler_flow: bool | None = _item("Colour Doppler flow inside the material")
    arterial_waveform: bool | None = _item("Arterial (pulsatile) waveform inside")
    thrombus_seen: bool | None = _item("Thrombus (intraluminal material) seen in the vein")
    lesion_content: Literal["solid", "cystic", "mixed"] | None = Field(
        default=None, title="Content of the lesion (solid, cystic or mixed)")
    compressing_structure: Literal["mass", "artery", "none"] | None = Field(
        default=None, title="What compresses the vein (a mass, an artery as in May-Thurner, or nothing)")
    adjacent_organ_mass: OrganMass | None = Field(default=None, title="Mass in an adjacent organ")
    post_thrombotic_changes: bool | None = _item(
        "Post-thrombotic changes (thick wall, synechiae, recanalised channels)")

    @field_validator("compressing_structure")
    @classmethod
    def _compression_agrees(cls, value: str | None, info: ValidationInfo) -> str | None:
        legacy = info.data.get("compression_of_vein")
        if legacy is True and value in ("artery", "none"):
            raise PydanticCustomError(
                "compression_conflict",
                "compression_of_vein: true means a mass compresses the vein, but compressing_structure "
                "is '{value}'", {"value": value,
                                 "fix": "give one of them (compressing_structure: mass | artery | none)"})
        return value

    def compressed_by(self) -> str | None:
        """What compresses the vein: "mass", "artery", "none" or None (not known).

        The older ``compression_of_vein: true`` counts as "mass".
        """
        if self.compressing_structure is not None:
            return self.compressing_structure
        return "mass" if self.compression_of_vein else None


class KnownCancer(_Strict):
    """A malignancy known, or an organ mass seen on imaging."""

    present: bool | None = _item("Known or suspected cancer")
    site: CancerSite | None = Field(default=None, title="Site of the cancer or organ mass")
    status: Literal["active", "treated", "suspected"] | None = Field(default=None, title="Status")


#: The vein sites a case file may name (contract "Additions").
SITES: tuple[str, ...] = ("ivc", "common-iliac", "external-iliac", "internal-iliac", "iliac", "femoral",
                          "popliteal", "calf", "gonadal", "renal", "other")
#: Sites that are iliac veins (``iliac`` when the segment is not known).
ILIAC_SITES: tuple[str, ...] = ("common-iliac", "external-iliac", "internal-iliac", "iliac")


class ClinicalCase(_Strict):
    """Everything optional that the decision support may use about the patient.

    Attributes
    ----------
    age_years : float, optional
    sex : {"female", "male", "other"}, optional
    symptom_duration_days : float, optional
        Time since the leg (or other) symptoms began, in days.
    anticoagulation : Anticoagulation, optional
    d_dimer : DDimer, optional
    pt_s, inr, aptt_s : float, optional
        Prothrombin time (s), INR (1), activated partial thromboplastin time (s).
    coagulation_screen : {"normal", "abnormal", "not-done"}, optional
        The laboratory's verdict on PT/APTT when no numbers are given.
    thrombophilia_screen : {"normal", "abnormal", "not-done"}, optional
    wells : WellsItems, optional
    ultrasound : UltrasoundFindings, optional
    site : one of `SITES`, optional
        ivc, common-iliac, external-iliac, internal-iliac, iliac (segment
        not known), femoral, popliteal, calf, gonadal, renal, other.
    vein : str, optional
        Free-text name of the vein (e.g. "external iliac vein"), shown as given.
    side : {"left", "right", "bilateral"}, optional
    recurrence, unprovoked : bool, optional
        Recurrent thrombosis; thrombosis without a provoking factor.
    pregnant : bool, optional
    known_cancer : KnownCancer, optional
        A known malignancy or an organ mass seen on imaging (present, site, status).
    """

    age_years: float | None = Field(default=None, ge=0, le=130, title="Age (years)")
    sex: Literal["female", "male", "other"] | None = Field(default=None, title="Sex")
    symptom_duration_days: float | None = Field(default=None, ge=0,
                                                title="Duration of symptoms (days)")
    anticoagulation: Anticoagulation | None = Field(default=None, title="Anticoagulation")
    d_dimer: DDimer | None = Field(default=None, title="D-dimer")
    pt_s: float | None = Field(default=None, gt=0, title="PT, prothrombin time (s)")
    inr: float | None = Field(default=None, gt=0, title="INR")
    aptt_s: float | None = Field(default=None, gt=0,
                                 title="APTT, activated partial thromboplastin time (s)")
    coagulation_screen: Literal["normal", "abnormal", "not-done"] | None = Field(
        default=None, title="Coagulation screen")
    thrombophilia_screen: Literal["normal", "abnormal", "not-done"] | None = Field(
        default=None, title="Thrombophilia screen")
    wells: WellsItems | None = Field(default=None, title="Wells DVT items")
    ultrasound: UltrasoundFindings | None = Field(default=None, title="Ultrasound (B-mode and Doppler)")
    site: Literal["ivc", "common-iliac", "external-iliac", "internal-iliac", "iliac", "femoral", "popliteal",
                  "calf", "gonadal", "renal", "other"] | None = Field(default=None, title="Site (vein)")
    vein: str | None = Field(default=None, max_length=100, title="Vein (as named in the report)")
    side: Literal["left", "right", "bilateral"] | None = Field(default=None, title="Side")
    recurrence: bool | None = Field(default=None, title="Recurrence after treatment")
    unprovoked: bool | None = Field(default=None, title="Unprovoked (no risk factor found)")
    pregnant: bool | None = Field(default=None, title="Pregnant")
    known_cancer: KnownCancer | None = Field(default=None, title="Known or suspected cancer (or organ mass)")


_MODELS: dict[str, type[BaseModel]] = {
    "": ClinicalCase, "anticoagulation": Anticoagulation, "d_dimer": DDimer,
    "wells": WellsItems, "ultrasound": UltrasoundFindings, "known_cancer": KnownCancer,
}


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    """One error from pydantic -> (problem, fix) in ceuskit's words."""
    loc = tuple(str(p) for p in err.get("loc", ()))
    field = ".".join(loc) if loc else "(top level)"
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = ".".join(loc[:-1])
        model = _MODELS.get(parent)
        known = ", ".join(model.model_fields) if model is not None else ""
        where = f"of {parent}" if parent else "at the top level"
        return f"field '{field}': unknown field", f"known fields {where}: {known}" if known else ""
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return (f"field '{field}': {err.get('input')!r} is not allowed",
                f"use one of {expected.replace(' or ', ', ')}")
    if kind == "model_type" or kind == "dict_type":
        return f"field '{field}': expected a mapping of fields, got {type(err.get('input')).__name__}", \
            "write it as nested fields (key: value)"
    fix = str(ctx.get("fix", "")) if "fix" in ctx else ""
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not fix:
        by_kind = {
            "greater_than_equal": f"give a value >= {ctx.get('ge')}",
            "greater_than": f"give a value > {ctx.get('gt')}",
            "less_than_equal": f"give a value <= {ctx.get('le')}",
            "float_parsing": "give a number", "float_type": "give a number",
            "bool_parsing": "use true or false", "bool_type": "use true or false",
            "string_type": "give text", "string_too_long": "shorten the text",
        }
        fix = by_kind.get(kind, "correct the value (see the fields of ceuskit.clinical.case.ClinicalCase)")
    return f"field '{field}': {msg[:1].lower() + msg[1:]}", fix


def parse_case(data: Mapping[str, Any], source: str) -> ClinicalCase:
    """Validate a case given as a mapping.

    Parameters
    ----------
    data : Mapping
        Field names to values, as read from YAML or JSON.
    source : str
        Where the data came from (a path or "request"), named in errors.

    Returns
    -------
    ClinicalCase

    Raises
    ------
    InputError
        Naming every offending field (dotted path, e.g. ``d_dimer.unit``) and
        how to fix it, on one line (at most `MAX_LISTED_PROBLEMS`).
    """
    if not isinstance(data, Mapping):
        raise InputError(source, f"a case must be a mapping of fields, got {type(data).__name__}",
                         "write the case as key: value fields (see ceuskit's example cases)")
    try:
        return ClinicalCase.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        described = [_describe(e) for e in errors[:MAX_LISTED_PROBLEMS]]
        if len(described) == 1:
            problem, fix = described[0]
        else:
            # Every problem on the one line, each with its fix, so one edit fixes the file.
            problem = f"{len(errors)} problems: " + "; ".join(
                f"({i}) {p} - {f}" for i, (p, f) in enumerate(described, start=1))
            if len(errors) > len(described):
                problem += f"; and {len(errors) - len(described)} more"
            fix = "fix each field named"
        raise InputError(source, problem, fix) from None


def _read_mapping(text: str, source: str, suffix: str) -> Any:
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                             "fix the JSON syntax") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or "syntax error"
        raise InputError(source, f"not valid YAML{where}: {what}", "fix the YAML syntax") from None


def load_case(path: str | PathLike[str]) -> ClinicalCase:
    """Read and validate a case file (``.yaml``, ``.yml`` or ``.json``).

    Raises
    ------
    InputError
        If the file is missing or unreadable, has another extension, is not
        valid YAML/JSON, is not a mapping, or has an invalid or unknown field.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InputError(p, f"unsupported case file type '{p.suffix or '(none)'}'",
                         "give a .yaml, .yml or .json case file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(p, "case file not found", "check the path given to --case") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(p, f"cannot read the case file ({reason})",
                         "give a readable UTF-8 text file") from None
    data = _read_mapping(text, str(p), suffix)
    if data is None:
        raise InputError(p, "the case file is empty", "add at least one field (see ceuskit's example cases)")
    return parse_case(data, str(p))


def example_case(name: str) -> ClinicalCase:
    """One of the example cases shipped with ceuskit.

    Parameters
    ----------
    name : str
        ``"index_case"`` (venous leiomyosarcoma treated as DVT for two years)
        or ``"acute_bland_dvt"`` (post-operative calf DVT).

    Raises
    ------
    InputError
        If `name` is not one of `CASE_EXAMPLES`.
    """
    if name not in CASE_EXAMPLES:
        raise InputError(None, f"no example case named {name!r}", f"use one of {', '.join(CASE_EXAMPLES)}")
    resource = resources.files("ceuskit.clinical").joinpath("cases", f"{name}.yaml")
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    return parse_case(data, f"example case {name}")
