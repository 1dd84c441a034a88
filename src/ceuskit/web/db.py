"""Storage of studies and analyses (SQLAlchemy 2 ORM).

SQLite in the data directory by default (``sqlite:///DIR/ceuskit.db``); any
SQLAlchemy URL works (PostgreSQL through psycopg: the ``postgres`` extra).
Files live beside the database under ``DIR/studies/<study id>/``; the tables
hold what describes them.  Ids are server-generated UUID hex strings.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

#: Analysis states: what the page polls for.
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def new_id() -> str:
    """A fresh id: 32 lower-case hex digits (never derived from client input)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Study(Base):
    """One uploaded (or simulated) cine with its settings, ROIs and case.

    ``info`` holds what was found in the file (non-identifying metadata,
    frame count and shape, frame times, the detected panels); ``settings``
    the user's linearisation settings; ``rois`` the ROI document (contract
    format, ``space: "panel"``); ``case`` the clinical case form's data.
    """

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    display_name: Mapped[str] = mapped_column(String(120))
    format: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    case: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    rois: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    current_analysis_id: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)


class AnalysisRow(Base):
    """One run of the pipeline on a study (results in ``result_dir``, relative to DIR)."""

    __tablename__ = "analyses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str] = mapped_column(String(32), ForeignKey("studies.id", ondelete="CASCADE"),
                                          index=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    stage: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    result_dir: Mapped[str | None] = mapped_column(String(300), nullable=True, default=None)


#: JSON columns hold strict JSON on every backend: NaN or infinity is an error when
#: written (PostgreSQL refuses them; SQLite would store what no response can return).
_json_dumps = functools.partial(json.dumps, allow_nan=False)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout (several writers)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=_json_dumps)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the page read while a worker process writes progress.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps)


class Store:
    """Sessions on one database; creates the tables on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def set_stage(self, analysis_id: str, status: str, stage: str | None = None, *,
                  error: str | None = None, result_dir: str | None = None,
                  finished: bool = False) -> None:
        """Record an analysis' state (called from the worker that runs it)."""
        with self.session() as s:
            row = s.get(AnalysisRow, analysis_id)
            if row is None:
                return
            row.status = status
            row.stage = stage
            if error is not None:
                row.error = error
            if result_dir is not None:
                row.result_dir = result_dir
            if finished:
                row.finished = utcnow()
            if status == DONE:
                study = s.get(Study, row.study_id)
                if study is not None:
                    study.current_analysis_id = row.id

    def interrupt_unfinished(self) -> int:
        """Mark analyses left queued or running by a previous server as failed."""
        with self.session() as s:
            rows = s.scalars(select(AnalysisRow).where(AnalysisRow.status.in_((QUEUED, RUNNING)))).all()
            for row in rows:
                row.status = FAILED
                row.stage = None
                row.error = "interrupted: the server stopped before the analysis finished; run it again"
                row.finished = utcnow()
            return len(rows)

    def dispose(self) -> None:
        self.engine.dispose()
