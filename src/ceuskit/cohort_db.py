"""The results database of a cohort: the web app's models plus cohort tables.

One database holds, beside the web app's ``studies`` and ``analyses``,
``cohort_cases`` (one row per case: status, error, label, assessment) and
``cohort_roi_parameters`` (one row per case and ROI, every perfusion
parameter as a typed column with its unit in the name), so a cohort can be
queried in SQL::

    SELECT c.case_id, c.label, p.peak_enhancement_au
    FROM cohort_cases c JOIN cohort_roi_parameters p ON p.cohort_case_id = c.id
    WHERE p.role = 'lesion';

Each case that ran is also a study of the web app, with its analysis
pointing at ``cases/<id>/``: ``ceuskit serve --data DIR`` (with the same
``--db`` when it is not the default) opens it.  SQLite in DIR by default;
PostgreSQL by URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from ceuskit.batch_summary import PARAMETER_COLUMNS, cell_bool, cell_number
from ceuskit.errors import InputError
from ceuskit.web.db import DONE, AnalysisRow, Base, Store, Study, new_id, utcnow

log = logging.getLogger("ceuskit.batch")

__all__ = ["CohortCase", "CohortRoiParameters", "file_case_study", "open_store", "store_cohort"]


class CohortCase(Base):
    """One case of a cohort (a manifest row) and what its analysis gave."""

    __tablename__ = "cohort_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cohort: Mapped[str] = mapped_column(String(64), index=True)
    cohort_dir: Mapped[str] = mapped_column(Text)
    case_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    label: Mapped[str | None] = mapped_column(String(16), nullable=True)
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    suspect_neoplasm: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    necrosis_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    study_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("studies.id",
                                                 ondelete="SET NULL"), nullable=True)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CohortRoiParameters(Base):
    """The perfusion parameters of one ROI of one case (units in the column names)."""

    __tablename__ = "cohort_roi_parameters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cohort_case_id: Mapped[int] = mapped_column(Integer, ForeignKey("cohort_cases.id",
                                                ondelete="CASCADE"), index=True)
    roi: Mapped[str] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    enhancing: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    necrosis_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    arrival_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    time_to_peak_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    rise_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean_transit_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    fall_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_enhancement_au: Mapped[float | None] = mapped_column(Float, nullable=True)
    auc_au_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    wash_in_rate_au_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    wash_out_rate_au_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    wash_in_auc_au_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    wash_out_auc_au_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    wash_in_perfusion_index_au: Mapped[float | None] = mapped_column(Float, nullable=True)
    qof: Mapped[float | None] = mapped_column(Float, nullable=True)


def cohort_id(out: Path) -> str:
    """A stable id of a batch directory (hash of its absolute path)."""
    return hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:32]


def open_store(url: str) -> Store:
    """The results database at `url` (tables created when missing).

    Raises
    ------
    InputError
        The database cannot be opened.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return Store(url)
    except (SQLAlchemyError, OSError) as exc:
        raise InputError("--db", f"the database cannot be opened ({type(exc).__name__})",
                         "give a SQLAlchemy URL such as sqlite:///cohort.db or "
                         "postgresql+psycopg://user@host/db") from None


def file_case_study(store: Store, out: Path, spec: Any) -> str | None:
    """File a finished case's cine as a web study whose analysis is ``cases/<id>/``.

    Returns the study id, or None when the cine cannot be filed (the case's
    results stay valid; the web app just does not list it).  An exam of
    several clips is not filed: a web study holds one cine, and showing the
    first clip beside the whole exam's analysis would misstate what was
    analysed.
    """
    if len(getattr(spec, "clips", ())) > 0:
        log.info("case %s: an exam of several clips, not filed as a web study", spec.id)
        return None
    case_dir = Path(out) / "cases" / spec.id
    import json

    from ceuskit.web import studies
    from ceuskit.web.intake import register_cine, study_dir
    from ceuskit.web.security import sniff_upload, stored_cine

    try:
        with Path(spec.cine).open("rb") as fh:
            fmt = sniff_upload(fh.read(256))
    except OSError:
        return None
    if fmt is None:
        return None
    sid = new_id()
    sdir = study_dir(out, sid)
    sdir.mkdir(parents=True)
    target = stored_cine(sdir, fmt)
    try:
        try:
            os.link(spec.cine, target)  # no second copy of a large cine when the disk allows
        except OSError:
            shutil.copyfile(spec.cine, target)
        try:
            rois = json.loads(Path(spec.roi).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rois = None
        try:
            register_cine(store, out, target, fmt, spec.id, sid, rois=rois)
        except InputError:
            # ROIs the editor cannot show (mask files): the study without them.
            sdir.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(spec.cine, target)
            register_cine(store, out, target, fmt, spec.id, sid)
    except (OSError, InputError) as exc:
        log.warning("case %s: not filed as a web study (%s)", spec.id, exc)
        shutil.rmtree(sdir, ignore_errors=True)
        return None
    with store.session() as s:
        aid = new_id()
        s.add(AnalysisRow(id=aid, study_id=sid, status=DONE, stage=None, finished=utcnow(),
                          result_dir=os.path.relpath(case_dir, out)))
        study = s.get(Study, sid)
        if study is not None:
            study.current_analysis_id = aid
            study.settings = {**studies.default_settings(), **study.settings}
    return sid


def _remove_study(store: Store, out: Path, study_id: str) -> None:
    from ceuskit.web.intake import study_dir

    with store.session() as s:
        study = s.get(Study, study_id)
        if study is not None:
            s.execute(delete(AnalysisRow).where(AnalysisRow.study_id == study_id))
            s.delete(study)
    shutil.rmtree(study_dir(out, study_id), ignore_errors=True)


def store_cohort(store: Store, out: Path, cases: Sequence[Any],
                 records: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, str]],
                 filed: Mapping[str, str | None] | None = None) -> None:
    """Write (or refresh) a cohort's rows in the database.

    The cohort's earlier rows are replaced.  ``filed`` holds the web studies
    filed as cases finished in this run (`file_case_study`); any other ok case
    keeps its earlier study when its results did not change, or gets one now.
    A study whose case was recomputed is removed with its files.
    """
    out = Path(out)
    filed = filed or {}
    cid = cohort_id(out)
    with store.session() as s:
        old = {c.case_id: (c.input_key, c.study_id, c.status)
               for c in s.scalars(select(CohortCase).where(CohortCase.cohort == cid))}
    by_case: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        by_case.setdefault(row["id"], []).append(row)
    for spec in cases:
        rec = records.get(spec.id) or {}
        case_rows = by_case.get(spec.id, [])
        first = case_rows[0] if case_rows else {}
        status = first.get("status") or str(rec.get("status") or "failed")
        key = rec.get("key")
        case_dir = out / "cases" / spec.id
        prev = old.get(spec.id)
        study_id = None
        if status == "ok":
            if spec.id in filed:
                study_id = filed[spec.id]
            elif prev is not None and prev[0] == key and prev[1] is not None and prev[2] == "ok":
                study_id = prev[1]
            else:
                study_id = file_case_study(store, out, spec)
        if prev is not None and prev[1] is not None and prev[1] != study_id:
            _remove_study(store, out, prev[1])  # its results were replaced
        with store.session() as s:
            s.execute(delete(CohortCase).where(CohortCase.cohort == cid,
                                               CohortCase.case_id == spec.id))
            case_row = CohortCase(
                cohort=cid, cohort_dir=str(out.resolve()), case_id=spec.id, status=status,
                error=first.get("error") or None, label=spec.label, level=first.get("level") or None,
                suspect_neoplasm=cell_bool(first.get("suspect_neoplasm")),
                necrosis_percent=cell_number(first.get("necrosis_percent")), input_key=key,
                result_dir=str(case_dir) if status == "ok" else None, study_id=study_id)
            s.add(case_row)
            s.flush()
            for row in case_rows:
                if not row.get("roi"):
                    continue
                params = {col: cell_number(row.get(col)) for col in PARAMETER_COLUMNS.values()}
                s.add(CohortRoiParameters(
                    cohort_case_id=case_row.id, roi=row["roi"], role=row.get("role") or None,
                    enhancing=cell_bool(row.get("enhancing")), model=row.get("model") or None,
                    necrosis_fraction=cell_number(row.get("necrosis_fraction")), **params))
    manifest_ids = {spec.id for spec in cases}
    with store.session() as s:
        s.execute(delete(CohortCase).where(CohortCase.cohort == cid,
                                           CohortCase.case_id.not_in(manifest_ids)))
