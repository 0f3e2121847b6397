"""The service's database (placedemarche.serve.db): answer log and feedback on SQLite and PostgreSQL,
several writer processes at once, pm feedback export, pm train --feedback."""

from __future__ import annotations

import csv
import glob
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port

pytest.importorskip("sqlalchemy")

from placedemarche.cli.main import cli  # noqa: E402
from placedemarche.data.catalog import load_catalog  # noqa: E402
from placedemarche.data.feedback import apply_feedback  # noqa: E402
from placedemarche.serve.db import SCHEMA_VERSION, DatabaseError, ServiceDB, open_db  # noqa: E402

WRITERS = 4
ROUNDS = 40  # per writer: one batch of answers and one feedback row each


def _answer(product_id, created=None, **extra):
    return {"product_id": product_id, "model_id": "model-1", "category": "Watches", "probability": 0.93,
            "decision": "auto", "seconds": 0.012, "created": created or time.time(), **extra}


def _write_concurrently(spec: str, writer: int, start, errors) -> None:
    """One worker process: opens its own connection, waits for the others, then writes."""
    try:
        db = open_db(spec)
        start.wait(timeout=60)
        for k in range(ROUNDS):
            db.log_answers([_answer(f"w{writer}-{k}-{j}") for j in range(3)])
            db.add_feedback(f"p{k}", f"category-{writer}", model_id="model-1")
        db.close()
    except BaseException as exc:  # reported to the parent: a child's traceback is lost otherwise
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")


def _run_writers(spec: str) -> list[str]:
    context = multiprocessing.get_context("fork")
    start, errors = context.Barrier(WRITERS), context.Queue()
    workers = [context.Process(target=_write_concurrently, args=(spec, w, start, errors)) for w in range(WRITERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    stuck = [w for w in workers if w.is_alive()]
    for worker in stuck:
        worker.kill()
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not stuck, f"{len(stuck)} writer process(es) still running after 180 s"
    assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
    return found


def _check_concurrent_writes(db: ServiceDB) -> None:
    assert db.counts() == {"answers": WRITERS * ROUNDS * 3, "feedback": WRITERS * ROUNDS}
    ids = {row["product_id"] for row in db.answer_rows()}
    assert len(ids) == WRITERS * ROUNDS * 3  # every answer written once, none lost
    latest = db.latest_categories()
    assert set(latest) == {f"p{k}" for k in range(ROUNDS)}
    history = list(db.feedback_rows())
    for product_id, category in latest.items():  # the latest is the last recorded for that product
        assert category == [r["category"] for r in history if r["product_id"] == product_id][-1]


def _check_round_trip(db: ServiceDB) -> None:
    assert db.log_answers([]) == 0
    assert db.log_answers([_answer("p1", created="2024-05-01T10:00:00+02:00"),
                           _answer("p2", created=1714550400.0, decision="review", probability=0.4)]) == 2
    first = db.add_feedback("p1", "Kitchen", model_id="model-1", name="Steel pan", description="A pan, 24 cm",
                            photo_ref="upload:abc")
    assert first["id"] and first["product_id"] == "p1" and first["category"] == "Kitchen"
    assert first["name"] == "Steel pan" and first["created"].endswith("Z")
    db.add_feedback("p2", "Watches")
    db.add_feedback("p1", "Baby Care")  # a second opinion on p1: the latest wins
    answers = list(db.answer_rows())
    assert [a["product_id"] for a in answers] == ["p1", "p2"]
    assert answers[0]["created"] == "2024-05-01T08:00:00.000000Z"  # stored in UTC
    assert answers[1]["created"] == "2024-05-01T08:00:00.000000Z"
    assert answers[1]["decision"] == "review" and answers[1]["probability"] == pytest.approx(0.4)
    assert [r["category"] for r in db.feedback_rows()] == ["Kitchen", "Watches", "Baby Care"]
    latest = list(db.feedback_rows(latest=True))
    assert [(r["product_id"], r["category"]) for r in latest] == [("p2", "Watches"), ("p1", "Baby Care")]
    assert db.latest_categories() == {"p1": "Baby Care", "p2": "Watches"}
    assert list(db) == list(db.feedback_rows())
    with pytest.raises(DatabaseError, match="category is empty"):
        db.add_feedback("p3", " ")
    with pytest.raises(DatabaseError, match="unknown field.*colour"):
        db.log_answers([_answer("p3", colour="red")])


# -- SQLite ------------------------------------------------------------------------------------

def test_nothing_is_opened_without_a_database(tmp_path):
    assert open_db(None) is None
    assert list(tmp_path.iterdir()) == []


def test_sqlite_file_round_trip_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "service.db"
    with open_db(str(path)) as db:
        _check_round_trip(db)
    import sqlite3

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM pm_schema").fetchall() == [(SCHEMA_VERSION,)]
    # the same file through a URL, read back
    with open_db(f"sqlite:///{path}", create=False) as db:
        assert db.counts() == {"answers": 2, "feedback": 3}


def test_sqlite_several_processes_write_at_once(tmp_path):
    spec = str(tmp_path / "service.db")
    open_db(spec).close()  # created beforehand as pm serve does before starting its workers
    assert _run_writers(spec) == []
    with open_db(spec) as db:
        _check_concurrent_writes(db)


def test_sqlite_workers_creating_the_tables_at_once(tmp_path):
    """Workers starting together on a new file race to create the tables: none may fail."""
    spec = str(tmp_path / "fresh.db")
    assert _run_writers(spec) == []
    with open_db(spec) as db:
        assert db.counts()["feedback"] == WRITERS * ROUNDS


def test_a_forked_child_writes_through_the_parents_object(tmp_path):
    db = open_db(str(tmp_path / "service.db"))
    db.add_feedback("before", "Watches")
    pid = os.fork()
    if pid == 0:  # the child: its first use must not reuse the parent's connection
        try:
            db.add_feedback("child", "Kitchen")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    db.add_feedback("after", "Baby Care")
    assert db.latest_categories() == {"before": "Watches", "child": "Kitchen", "after": "Baby Care"}
    db.close()


@pytest.mark.parametrize("spec, message", [
    ("", "--db is empty"),
    ("{tmp}", "is a directory"),
    ("nosuchdialect://x/y", "nosuchdialect.*give a plain file path"),
    ("postgresql://pm:s3cret@127.0.0.1:{port}/pm", r"postgresql://pm:\*\*\*@127\.0\.0\.1.*cannot open.*check the server is running"),
    ("sqlite:///file:{tmp}/ro.db?mode=ro&uri=true", "ro.db.*cannot (open|record feedback).*(readonly|read-only)"),
])
def test_bad_databases_give_one_line_naming_them(tmp_path, spec, message):
    open_db(str(tmp_path / "ro.db")).close()
    spec = spec.format(tmp=tmp_path, port=free_port())
    with pytest.raises(DatabaseError, match=message) as caught:
        db = open_db(spec)
        db.add_feedback("p1", "Watches")  # a read-only file opens but cannot be written
    assert "\n" not in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_reading_a_missing_or_foreign_database_fails_without_creating_it(tmp_path):
    with pytest.raises(DatabaseError, match="no such database file"):
        open_db(str(tmp_path / "none.db"), create=False)
    assert not (tmp_path / "none.db").exists()
    import sqlite3

    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DatabaseError, match="no answers, feedback, pm_schema table"):
        open_db(str(tmp_path / "other.db"), create=False)


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "service.db"
    open_db(str(path)).close()
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pm_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade placedemarche"):
        open_db(str(path))


# -- pm feedback export ------------------------------------------------------------------------

def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_feedback_export_round_trip(tmp_path):
    spec = str(tmp_path / "service.db")
    with open_db(spec) as db:
        db.add_feedback("p1", "Kitchen", model_id="m1", name='Pan, "steel"', description="line one\nline two")
        db.add_feedback("p2", "Watches")
        db.add_feedback("p1", "Baby Care", photo_ref="upload:1")
        db.log_answers([_answer("p1"), _answer("p2")])
        stored = list(db.feedback_rows())
    runner = CliRunner()
    out = tmp_path / "export" / "feedback.csv"
    done = runner.invoke(cli, ["feedback", "export", spec, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert f"2 products' latest feedback from {spec} -> {out}" in " ".join(done.output.split())
    rows = _read_csv(out)
    assert [(r["product_id"], r["category"]) for r in rows] == [("p2", "Watches"), ("p1", "Baby Care")]
    assert rows[1]["photo_ref"] == "upload:1" and rows[1]["created"] == stored[2]["created"]

    done = runner.invoke(cli, ["feedback", "export", spec, "-o", str(out), "--history"])
    assert done.exit_code == 0, done.output
    rows = _read_csv(out)
    assert rows == [{k: "" if v is None else str(v) for k, v in row.items()} for row in stored]
    assert rows[0]["name"] == 'Pan, "steel"' and rows[0]["description"] == "line one\nline two"

    answers = tmp_path / "answers.csv"
    done = runner.invoke(cli, ["feedback", "export", spec, "-o", str(answers), "--answers"])
    assert done.exit_code == 0, done.output
    assert [r["product_id"] for r in _read_csv(answers)] == ["p1", "p2"]
    assert {"model_id", "probability", "decision", "seconds", "created"} <= set(_read_csv(answers)[0])


def test_feedback_export_of_a_missing_database_leaves_nothing(tmp_path):
    out = tmp_path / "feedback.csv"
    done = CliRunner().invoke(cli, ["feedback", "export", str(tmp_path / "none.db"), "-o", str(out)])
    assert done.exit_code == 1
    assert "none.db: no such database file" in done.output
    assert not out.exists() and not (tmp_path / "none.db").exists()


# -- pm train --feedback -----------------------------------------------------------------------

def test_apply_feedback_overrides_adds_and_reports_unknown_ids(tiny_catalog):
    catalog = load_catalog(tiny_catalog)
    catalog.labels[1] = ""  # wat001 has no category: dropped without feedback
    assert "wat001" not in catalog.validated(text="both", image=False, labels=True).ids
    result = apply_feedback(catalog, {"wat000": "Kitchen", "wat001": "Watches", "kit000": "Kitchen",
                                      "ghost": "Watches", "bab000": "Toys"})
    assert (result.overridden, result.added, result.confirmed, result.applied) == (2, 1, 1, 4)
    assert result.unknown == ["ghost"] and result.new_categories == ["Toys"]
    labels = dict(zip(result.catalog.ids, result.catalog.labels))
    assert labels["wat000"] == "Kitchen" and labels["wat001"] == "Watches" and labels["bab000"] == "Toys"
    assert "wat001" in result.catalog.validated(text="both", image=False, labels=True).ids
    assert catalog.labels[0] == "Watches"  # the catalogue given is left as it was
    assert "1 product id(s) not in the catalogue, not used: ghost" in result.summary()


def test_train_with_feedback_overrides_the_catalogues_categories(tiny_catalog, tmp_path):
    spec = str(tmp_path / "service.db")
    with open_db(spec) as db:
        for j in range(6):  # people renamed a whole category
            db.add_feedback(f"kit{j:03d}", "Cookware")
        db.add_feedback("wat000", "Kitchen")
        db.add_feedback("wat000", "Watches")  # corrected again: the latest counts, the same as the catalogue
        db.add_feedback("ghost", "Watches")
    model_dir = tmp_path / "model"
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1", "--folds", "3",
                                    "--feedback", spec, "--out", str(model_dir), "--no-progress"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "feedback: 7 categories applied (6 overriding the catalogue's, 0 for unlabelled products, 1 the same)" in said
    assert "1 product id(s) not in the catalogue, not used: ghost" in said
    assert "new categories: Cookware" in said
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["categories"] == ["Baby Care", "Cookware", "Watches"]


def test_train_with_a_missing_feedback_database_stops_before_training(tiny_catalog, tmp_path):
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf", "--feedback",
                                    str(tmp_path / "none.db"), "--out", str(tmp_path / "m"), "--no-progress"])
    assert done.exit_code == 1
    assert "none.db: no such database file" in done.output
    assert not (tmp_path / "m").exists()


# -- PostgreSQL: a throw-away server on a free local port ----------------------------------------

def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own (initdb + pg_ctl in a temporary folder, 127.0.0.1 on a free
    port, trust authentication for the user ``pm``), stopped and removed after the module.
    Skipped when the binaries are missing, except in CI (CI set), where that fails."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries not found (apt-get install postgresql; .ci/run does)")
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pm-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*args, timeout=120):
        done = subprocess.run(run_as + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    try:
        run(bindir / "initdb", "-D", data, "-U", "pm", "--auth=trust", "--no-sync", "-E", "UTF8")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        yield f"postgresql://pm@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url):
    """A fresh database on the throw-away server, per test."""
    import sqlalchemy

    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    admin = sqlalchemy.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"


def test_postgresql_round_trip(postgres_db):
    with open_db(postgres_db) as db:
        assert db.url.drivername == "postgresql+psycopg"  # psycopg 3, not SQLAlchemy's default psycopg2
        _check_round_trip(db)
    with open_db(postgres_db.replace("postgresql://", "postgresql+psycopg://"), create=False) as db:
        assert db.counts() == {"answers": 2, "feedback": 3}


def test_postgresql_several_processes_write_at_once(postgres_db):
    assert _run_writers(postgres_db) == []  # the tables are created by the racing workers
    with open_db(postgres_db) as db:
        _check_concurrent_writes(db)


def test_postgresql_export_and_train_with_feedback(postgres_db, tiny_catalog, tmp_path):
    with open_db(postgres_db) as db:
        db.add_feedback("bab000", "Toys")
        db.add_feedback("bab001", "Toys")
        db.add_feedback("bab002", "Toys")
    out = tmp_path / "feedback.csv"
    done = CliRunner().invoke(cli, ["feedback", "export", postgres_db, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert [r["category"] for r in _read_csv(out)] == ["Toys"] * 3
    done = CliRunner().invoke(cli, ["train", "--data", str(tiny_catalog), "--text", "tfidf:min_df=1", "--folds", "3",
                                    "--feedback", postgres_db, "--out", str(tmp_path / "m"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "m" / "model.json").read_text())["categories"] == [
        "Baby Care", "Kitchen", "Toys", "Watches"]


def test_postgresql_missing_database_names_it(postgres_url):
    spec = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(DatabaseError, match=r"no_such_db: cannot open: .*does not exist"):
        open_db(spec)
