"""The clinical case form, generated from `ClinicalCase`'s JSON schema.

Nested objects become fieldsets, enums selects, booleans tri-state selects
(yes / no / not known: a case field left empty means "not known"), numbers
number inputs.  Validation is `ceuskit.clinical.case.parse_case`'s, run once
per top-level field so that the page can show a message beside every bad
field, then once on the whole case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ceuskit.errors import InputError

_FIELD_RE = re.compile(r"field '([^']+)'")


def available() -> bool:
    """True when ``ceuskit.clinical.case`` is installed."""
    try:
        import ceuskit.clinical.case  # noqa: F401
    except ImportError:
        return False
    return True


def schema() -> dict[str, Any]:
    from ceuskit.clinical.case import ClinicalCase

    out: dict[str, Any] = ClinicalCase.model_json_schema()
    return out


def _label(name: str, spec: Mapping[str, Any]) -> str:
    title = str(spec.get("title") or name.replace("_", " "))
    if title.endswith(")"):
        return title  # the case model's own label, with its unit
    # Units are in the field names (_days, _s, _years): say them in the label.
    for suffix, unit in (("_days", "days"), ("_years", "years"), ("_s", "s")):
        if name.endswith(suffix):
            words = title.rsplit(" ", 1)[0] if " " in title else title
            return f"{words} ({unit})"
    return title


def _options(spec: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """(json type, the non-null branch) of a property, through anyOf [X, null]."""
    branches = spec.get("anyOf")
    if branches:
        real = [b for b in branches if b.get("type") != "null"]
        if real:
            spec = real[0]
    if "$ref" in spec:
        return "object", spec
    if "enum" in spec:
        return "enum", spec
    return str(spec.get("type", "string")), spec


def _hints() -> dict[str, list[str]]:
    """Suggested values for free-text fields the case module lists."""
    try:
        from ceuskit.clinical import case as case_mod
    except ImportError:
        return {}
    units = getattr(case_mod, "D_DIMER_UNITS", None)
    return {"d_dimer.unit": list(units)} if units else {}


def form_fields() -> list[dict[str, Any]]:
    """The form as a list of fields and fieldsets for the template (empty without the module).

    Each field: ``{"kind": "number"|"text"|"select"|"tristate", "name":
    dotted path, "label", "options", "min", "max", "step", "hints"}``; a
    fieldset: ``{"kind": "fieldset", "name", "label", "description", "fields"}``.
    """
    if not available():
        return []
    doc = schema()
    defs = doc.get("$defs", {})
    hints = _hints()

    def build(props: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, spec in props.items():
            path = f"{prefix}{name}"
            kind, real = _options(spec)
            label = _label(name, spec)
            if kind == "object":
                ref = str(real["$ref"]).rsplit("/", 1)[-1]
                sub = defs.get(ref, {})
                out.append({"kind": "fieldset", "name": path, "label": label,
                            "description": sub.get("description", ""),
                            "fields": build(sub.get("properties", {}), path + ".")})
            elif kind == "enum":
                out.append({"kind": "select", "name": path, "label": label,
                            "options": [str(v) for v in real["enum"]]})
            elif kind == "boolean":
                out.append({"kind": "tristate", "name": path, "label": label})
            elif kind in ("number", "integer"):
                lo = real.get("minimum", real.get("exclusiveMinimum"))
                hi = real.get("maximum", real.get("exclusiveMaximum"))
                out.append({"kind": "number", "name": path, "label": label, "min": lo, "max": hi,
                            "step": "1" if kind == "integer" else "any"})
            else:
                out.append({"kind": "text", "name": path, "label": label,
                            "maxlength": real.get("maxLength"), "hints": hints.get(path, [])})
        return out

    return build(doc.get("properties", {}), "")


def _prune(value: Any) -> Any:
    """Drop empty values (None, "", empty objects): an absent field means "not known"."""
    if isinstance(value, Mapping):
        kept = {str(k): _prune(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != "" and v != {}}
    return value


def validate(body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Validate a case from the form (or a script).

    Returns
    -------
    (case, errors)
        The case as stored (JSON, empty fields dropped) and, when invalid, a
        message per field (dotted path -> one line); ``errors`` is empty when
        the case is valid.
    """
    from ceuskit.clinical.case import parse_case

    if not isinstance(body, Mapping):
        return {}, {"": "the case must be a JSON object of fields"}
    clean = _prune(body)
    errors: dict[str, str] = {}
    for key, value in clean.items():
        try:
            parse_case({key: value}, "clinical case")
        except InputError as exc:
            m = _FIELD_RE.search(exc.problem)
            errors[m.group(1) if m else key] = str(exc)
    if errors:
        return clean, errors
    try:
        model = parse_case(clean, "clinical case")
    except InputError as exc:
        m = _FIELD_RE.search(exc.problem)
        return clean, {m.group(1) if m else "": str(exc)}
    return model.model_dump(mode="json", exclude_none=True), {}
