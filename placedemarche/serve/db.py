"""The service's database: the log of every answer given and the categories people chose.

One SQLAlchemy Core schema for every database the service writes to: an SQLite file by
default (``--db PATH``; WAL journal and a busy timeout, so several uvicorn worker processes
append at once, each waiting its turn for the write lock instead of failing) or any
SQLAlchemy URL for a shared deployment (``--db postgresql://user@host/db``). Nothing is
written without ``--db``: :func:`open_db` answers ``None`` then.

Usage::

    db = open_db("service.db")
    db.log_answers([{"product_id": "p1", "model_id": "m", "category": "Watches",
                     "probability": 0.97, "decision": "auto", "seconds": 0.01,
                     "created": time.time()}])
    db.add_feedback("p1", "Watches", model_id="m")
    rows = list(db.feedback_rows(latest=True))
    db.close()
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from placedemarche.core.errors import MissingDependencyError, PlaceDeMarcheError

#: Bumped when the tables change; a database written by a newer version is refused.
SCHEMA_VERSION = 1
#: Seconds a writer waits for another process's write lock (SQLite) before giving up.
BUSY_TIMEOUT_S = 30
#: Seconds to wait for a database server to answer a connection.
CONNECT_TIMEOUT_S = 10

ANSWER_FIELDS = ("product_id", "model_id", "category", "probability", "decision", "seconds", "created")
FEEDBACK_FIELDS = ("id", "product_id", "category", "model_id", "name", "description", "photo_ref", "created")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class DatabaseError(PlaceDeMarcheError):
    """The service's database cannot be opened, read or written."""


def open_db(spec: str | os.PathLike | None, *, create: bool = True) -> "ServiceDB | None":
    """The database named by ``spec``: ``None`` -> ``None`` (nothing is recorded), a plain path ->
    an SQLite file, a URL (``sqlite:///...``, ``postgresql://...``, ``postgresql+psycopg://...``)
    -> that database. Tables are created when missing; with ``create=False`` (reading only, as
    ``pm feedback export`` does) a missing SQLite file or missing tables are an error instead."""
    if spec is None:
        return None
    return ServiceDB(str(spec), create=create)


def _metadata():
    from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text

    meta = MetaData()
    Table("pm_schema", meta, Column("version", Integer, nullable=False))
    Table("answers", meta,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("product_id", String, index=True),
          Column("model_id", String),
          Column("category", String),
          Column("probability", Float),
          Column("decision", String),
          Column("seconds", Float),
          Column("created", DateTime, nullable=False))
    Table("feedback", meta,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("product_id", String, nullable=False, index=True),
          Column("category", String, nullable=False),
          Column("model_id", String),
          Column("name", Text),
          Column("description", Text),
          Column("photo_ref", String),
          Column("created", DateTime, nullable=False))
    return meta


def utc_naive(value: Any) -> datetime:
    """A moment as a naive UTC datetime, the form both SQLite and PostgreSQL columns keep:
    ``None`` (now), a POSIX time, an ISO 8601 string or a datetime (naive ones are taken as UTC)."""
    if value is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DatabaseError(f"created: '{value}' is not an ISO 8601 time nor a POSIX time") from None
    if not isinstance(value, datetime):
        raise DatabaseError(f"created: expected a time, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def iso_utc(value: datetime | None) -> str:
    """A stored (naive UTC) time as ISO 8601 with its ``Z``."""
    return "" if value is None else value.isoformat(timespec="microseconds") + "Z"


class ServiceDB:
    """The answers log and the feedback of one database (see :func:`open_db`).

    Safe to use from several threads (a connection pool) and several processes (each opens
    its own; a forked child drops the parent's connections on first use).
    """

    def __init__(self, spec: str, *, create: bool = True):
        try:
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--db needs SQLAlchemy: pip install 'placedemarche[serve]'") from None
        self.spec = spec
        self.url, self.label = _resolve(spec, create=create)
        self._meta = _metadata()
        self.answers = self._meta.tables["answers"]
        self.feedback = self._meta.tables["feedback"]
        self._engine = self._make_engine()
        self._pid = os.getpid()
        with self._errors("open"):
            self._prepare(create)

    # -- set-up -----------------------------------------------------------------------------

    def _make_engine(self):
        from sqlalchemy import create_engine, event

        connect_args = {}
        if self.url.get_backend_name() == "sqlite":
            connect_args["timeout"] = BUSY_TIMEOUT_S
        elif self.url.get_backend_name() == "postgresql" and "connect_timeout" not in self.url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            engine = create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        except Exception as exc:  # an unknown dialect, a driver that is not installed
            raise DatabaseError(f"{self.label}: {_first_line(exc)}: give a plain file path (SQLite) or a URL "
                                "such as postgresql://user@host/db (pip install placedemarche[serve])") from None
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
                # WAL: readers never block the writer and writers queue on one lock; the mode is
                # stored in the file, so setting it again is free.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
                cursor.close()
        return engine

    def _prepare(self, create: bool) -> None:
        from sqlalchemy import func, inspect, select

        names = set(inspect(self._engine).get_table_names())
        missing = {"pm_schema", "answers", "feedback"} - names
        if missing and not create:
            raise DatabaseError(f"{self.label}: no {', '.join(sorted(missing))} table: not a database "
                                "written by pm serve --db")
        if missing:
            self._create_tables()
        table = self._meta.tables["pm_schema"]
        with self._engine.begin() as conn:
            version = conn.execute(select(func.max(table.c.version))).scalar()
            if version is None and create:
                conn.execute(table.insert().values(version=SCHEMA_VERSION))
                version = SCHEMA_VERSION
        if version is not None and version > SCHEMA_VERSION:
            raise DatabaseError(f"{self.label}: schema version {version} was written by a newer placedemarche "
                                f"(this one knows {SCHEMA_VERSION}): upgrade placedemarche")

    def _create_tables(self, attempts: int = 5) -> None:
        import time

        from sqlalchemy.exc import SQLAlchemyError

        # Workers starting at once race to create the tables, one statement each: a loser's
        # CREATE fails on a table another just made, and its next try creates only what is missing.
        for attempt in range(attempts):
            try:
                self._meta.create_all(self._engine)
                return
            except SQLAlchemyError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn the driver's errors into one line naming the database and what to do."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            yield
        except SQLAlchemyError as exc:
            raise DatabaseError(f"{self.label}: cannot {doing}: {_hint(exc)}") from None

    def _connect(self):
        if os.getpid() != self._pid:  # a forked child must not share the parent's sockets/files
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._engine.begin()

    # -- writing ----------------------------------------------------------------------------

    def log_answers(self, rows: list[dict]) -> int:
        """Append answers (keys: product_id, model_id, category, probability, decision, seconds,
        created) in one transaction; answers the number written."""
        if not rows:
            return 0
        values = []
        for row in rows:
            unknown = set(row) - set(ANSWER_FIELDS)
            if unknown:
                raise DatabaseError(f"answer log: unknown field(s) {', '.join(sorted(unknown))}; "
                                    f"expected {', '.join(ANSWER_FIELDS)}")
            value = {key: row.get(key) for key in ANSWER_FIELDS}
            value["created"] = utc_naive(row.get("created"))
            values.append(value)
        with self._errors("write the answer log"), self._connect() as conn:
            conn.execute(self.answers.insert(), values)
        return len(values)

    def add_feedback(self, product_id: str, category: str, model_id: str | None = None, name: str | None = None,
                     description: str | None = None, photo_ref: str | None = None) -> dict:
        """Record the category a person chose for a product; answers the stored row."""
        if not str(product_id or "").strip():
            raise DatabaseError("feedback: product_id is empty")
        if not str(category or "").strip():
            raise DatabaseError(f"feedback for {product_id}: category is empty")
        row = {"product_id": str(product_id), "category": str(category).strip(), "model_id": model_id,
               "name": name, "description": description, "photo_ref": photo_ref, "created": utc_naive(None)}
        with self._errors("record feedback"), self._connect() as conn:
            result = conn.execute(self.feedback.insert().values(**row))
            row["id"] = result.inserted_primary_key[0]
        return _feedback_dict(row)

    # -- reading ----------------------------------------------------------------------------

    def feedback_rows(self, *, latest: bool = False) -> Iterator[dict]:
        """The feedback in the order it was recorded; with ``latest``, only the last one given
        for each product id. Each row: id, product_id, category, model_id, name, description,
        photo_ref, created (ISO 8601 UTC)."""
        from sqlalchemy import func, select

        table = self.feedback
        query = select(table).order_by(table.c.id)
        if latest:
            last = select(func.max(table.c.id)).group_by(table.c.product_id)
            query = query.where(table.c.id.in_(last))
        with self._errors("read feedback"), self._connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            yield _feedback_dict(row)

    def __iter__(self) -> Iterator[dict]:
        return self.feedback_rows()

    def latest_categories(self) -> dict[str, str]:
        """product id -> the category last chosen for it."""
        return {row["product_id"]: row["category"] for row in self.feedback_rows(latest=True)}

    def answer_rows(self) -> Iterator[dict]:
        """The answer log in the order it was written (created as ISO 8601 UTC)."""
        from sqlalchemy import select

        with self._errors("read the answer log"), self._connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(self.answers).order_by(self.answers.c.id))]
        for row in rows:
            row["created"] = iso_utc(row["created"])
            yield row

    def counts(self) -> dict[str, int]:
        """How many answers and feedback rows the database holds."""
        from sqlalchemy import func, select

        with self._errors("count rows"), self._connect() as conn:
            return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                    for name, table in (("answers", self.answers), ("feedback", self.feedback))}

    def export_csv(self, path: str | os.PathLike, *, rows: str = "latest") -> int:
        """Write feedback or the answer log to a CSV file atomically; answers the rows written.

        ``rows``: ``latest`` (the last category chosen for each product id), ``history`` (every
        feedback row) or ``answers`` (the answer log). Cells are written as recorded: text a
        seller typed is not escaped for spreadsheet formulas.
        """
        import csv

        from placedemarche.core.files import atomic_writer

        sources = {"latest": (FEEDBACK_FIELDS, lambda: self.feedback_rows(latest=True)),
                   "history": (FEEDBACK_FIELDS, self.feedback_rows),
                   "answers": (("id",) + ANSWER_FIELDS, self.answer_rows)}
        if rows not in sources:
            raise DatabaseError(f"export: rows must be one of {', '.join(sources)}, not '{rows}'")
        fields, read = sources[rows]
        data = list(read())  # read before the file is opened: a failing read leaves no file
        with atomic_writer(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(data)
        return len(data)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "ServiceDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServiceDB({self.label})"


def _feedback_dict(row: dict) -> dict:
    out = {key: row.get(key) for key in FEEDBACK_FIELDS}
    out["created"] = iso_utc(row.get("created"))
    return out


def _resolve(spec: str, *, create: bool):
    """``(url, label)``: the SQLAlchemy URL for ``spec`` and how messages name it (no password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not spec.strip():
        raise DatabaseError("--db is empty: give a file path (SQLite) or a database URL")
    if not _URL.match(spec):
        path = Path(spec).expanduser().resolve()
        if path.is_dir():
            raise DatabaseError(f"{spec}: is a directory: give a database file path such as {spec}/service.db")
        if not create and not path.exists():
            raise DatabaseError(f"{spec}: no such database file")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"{spec}: cannot create its folder: {exc.strerror}") from None
        return make_url(f"sqlite:///{path}"), str(spec)
    try:
        url = make_url(spec)
    except ArgumentError:
        raise DatabaseError(f"{_hide_password(spec)}: not a database URL (e.g. postgresql://user@host:5432/db "
                            "or sqlite:///path/service.db)") from None
    label = url.render_as_string(hide_password=True)
    if url.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; the serve extra has psycopg 3
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not create and not path.exists():
            raise DatabaseError(f"{label}: no such database file")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    return url, label


def _hide_password(spec: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", spec)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def _hint(exc: BaseException) -> str:
    """The driver's message and what to do about the usual causes."""
    text = _first_line(exc)
    low = text.lower()
    if "readonly" in low or "read-only" in low or "permission denied" in low:
        return f"{text} (make the file and its folder writable, or give another --db)"
    if "unable to open" in low:
        return f"{text} (check the path and that its folder exists and is writable)"
    if "connection" in low or "connect" in low or "could not translate host" in low or "timeout" in low:
        return f"{text} (check the server is running and the URL's host, port, user and database)"
    if "locked" in low or "busy" in low:
        return f"{text} (another process held the write lock for over {BUSY_TIMEOUT_S} s)"
    if "does not exist" in low or "authentication" in low or "password" in low:
        return f"{text} (check the URL's user, password and database name)"
    return text
