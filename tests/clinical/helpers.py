"""CEUS findings dicts of the shape ceuskit.findings produces (the agreed interface), for the tests."""

from __future__ import annotations

from typing import Any


def findings(enhancing: bool | None, **extra: Any) -> dict[str, Any]:
    """A findings dict of the agreed shape (ceuskit.findings)."""
    f: dict[str, Any] = {
        "lesion_roi": "lesion", "reference_roi": "muscle", "intraluminal_enhancement": enhancing,
        "wash_in": None, "enhancement": None if enhancing is None else ("iso" if enhancing else "none"),
        "homogeneity": None, "necrosis_percent": None,
        "wash_out": {"present": None, "onset_s": None, "timing": None, "degree": None},
        "evidence": {}, "missing": [], "definitions": {},
    }
    f.update(extra)
    return f


def malignant_findings() -> dict[str, Any]:
    """The index case's CEUS: rapid, hyper, heterogeneous wash-in, early wash-out, ~30 % necrosis."""
    return findings(
        True, wash_in="rapid", enhancement="hyper", homogeneity="heterogeneous", necrosis_percent=30.0,
        wash_out={"present": True, "onset_s": 38.0, "timing": "early", "degree": "marked"},
        evidence={
            "intraluminal_enhancement": {"text": "The lesion enhances", "statistic": "peak_to_baseline_db",
                                         "value": 14.2, "unit": "dB", "threshold": ">= 3 dB",
                                         "source": "Eur Radiol 2020"},
            "wash_in": {"text": "Lesion arrives before the muscle", "statistic": "arrival_difference_s",
                        "value": -2.4, "unit": "s", "threshold": "<= -1.0 s before the reference",
                        "source": "ceuskit heuristic (proposed)"},
        })


def non_enhancing_findings() -> dict[str, Any]:
    return findings(False, enhancement="none")
