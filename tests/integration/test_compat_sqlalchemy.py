"""SQLAlchemy Core and ORM through grproxy, compared with the backend directly, over the
PyMySQL and mysql-connector (pure Python) drivers.

SQLAlchemy leans on what the server reports: the version string (MariaDB detection), sql_mode,
affected rows with CLIENT_FOUND_ROWS (the ORM's optimistic version check), savepoints, reflection
through information_schema / SHOW CREATE TABLE, and unbuffered (server-side) result streaming.
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from compat_support import Target

pytestmark = pytest.mark.timeout(180)

DRIVERS = ["pymysql", "mysqlconnector"]


def _engine(t: Target, driver: str) -> sa.Engine:
    connect_args: dict[str, Any] = {"connect_timeout": 10} if driver == "pymysql" else {"connection_timeout": 10, "use_pure": True}
    return sa.create_engine(t.sqlalchemy_url(driver), connect_args=connect_args, pool_size=3, max_overflow=0)


def _core(t: Target, driver: str) -> dict[str, Any]:
    tag = t.table(driver[:5])
    meta = sa.MetaData()
    authors = sa.Table(
        f"authors_{tag}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(50, collation="utf8mb4_bin"), nullable=False, unique=True),
        sa.Column("born", sa.Date),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    books = sa.Table(
        f"books_{tag}",
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("author_id", sa.Integer, sa.ForeignKey(authors.c.id, ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.Unicode(200)),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("published", sa.DateTime(timezone=False)),
        sa.Column("data", sa.LargeBinary),
        sa.Column("meta", sa.JSON),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    engine = _engine(t, driver)
    out: dict[str, Any] = {}
    try:
        meta.drop_all(engine)
        meta.create_all(engine)
        out["dialect"] = (engine.dialect.name, engine.dialect.is_mariadb)
        with engine.begin() as conn:
            result = conn.execute(
                authors.insert(),
                [{"name": "Ada 😀", "born": datetime.date(1815, 12, 10)}, {"name": "Alan", "born": None}, {"name": "Grace", "born": datetime.date(1906, 12, 9)}],
            )
            out["insert_many_rowcount"] = result.rowcount
            result = conn.execute(authors.insert().values(name="Edsger"))
            out["inserted_pk"] = result.inserted_primary_key
            conn.execute(
                books.insert(),
                [
                    {"author_id": 1, "title": "Notes", "price": decimal.Decimal("12.50"), "published": datetime.datetime(1843, 9, 1, 10, 0), "data": b"\x00\x01\x02", "meta": {"tags": ["math", "😀"]}},
                    {"author_id": 2, "title": "Computable Numbers", "price": decimal.Decimal("99.99"), "published": None, "data": None, "meta": None},
                    {"author_id": 3, "title": "COBOL", "price": None, "published": datetime.datetime(1959, 1, 1), "data": b"", "meta": {"n": 1}},
                ],
            )
        with engine.connect() as conn:
            query = (
                sa.select(authors.c.name, sa.func.count(books.c.id).label("n"), sa.func.sum(books.c.price).label("total"))
                .select_from(authors.outerjoin(books))
                .group_by(authors.c.name)
                .order_by(authors.c.name)
            )
            out["join"] = [tuple(r) for r in conn.execute(query)]
            out["params"] = [tuple(r) for r in conn.execute(sa.select(books.c.title, books.c.data, books.c.meta).where(books.c.author_id.in_([1, 3])).order_by(books.c.id))]
            out["json_path"] = conn.execute(sa.select(books.c.meta["tags"][1]).where(books.c.id == 1)).scalar()
        with engine.begin() as conn:
            # Same value as stored: changed 0, matched 1. SQLAlchemy's drivers ask for found rows.
            out["update_same_rowcount"] = conn.execute(authors.update().where(authors.c.name == "Alan").values(name="Alan")).rowcount
            out["update_rowcount"] = conn.execute(books.update().where(books.c.price > 10).values(price=books.c.price + 1)).rowcount
        with engine.connect() as conn:
            trans = conn.begin()
            conn.execute(authors.insert().values(name="Rolled back"))
            savepoint = conn.begin_nested()
            conn.execute(authors.insert().values(name="Savepoint rolled back"))
            savepoint.rollback()
            conn.execute(authors.insert().values(name="Kept"))
            trans.commit()
            trans = conn.begin()
            conn.execute(authors.delete().where(authors.c.name == "Kept"))
            trans.rollback()
            out["names"] = conn.execute(sa.select(authors.c.name).order_by(authors.c.id)).scalars().all()
        with engine.connect().execution_options(stream_results=True, yield_per=2) as conn:
            out["streamed"] = [tuple(r) for r in conn.execute(sa.text("SELECT seq, seq * seq FROM seq_1_to_2000")).partitions(2)][:2]
        with engine.begin() as conn:
            try:
                conn.execute(authors.insert().values(name="Alan"))
                out["duplicate"] = "accepted"
            except sa.exc.IntegrityError as exc:
                out["duplicate"] = (type(exc.orig).__name__, exc.orig.args[0] if exc.orig.args else None)
        inspector = sa.inspect(engine)
        out["columns"] = [
            (c["name"], str(c["type"]), c["nullable"], c.get("autoincrement")) for c in inspector.get_columns(books.name)
        ]
        out["foreign_keys"] = [(fk["constrained_columns"], fk["referred_columns"], fk.get("options")) for fk in inspector.get_foreign_keys(books.name)]
        out["indexes"] = sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(authors.name))
        meta.drop_all(engine)
    finally:
        engine.dispose()
    return out


@pytest.mark.parametrize("driver", DRIVERS)
def test_sqlalchemy_core(target: Target, direct: Target, driver: str, backend: Any) -> None:
    observed, reference = _core(target, driver), _core(direct, driver)
    assert observed == reference
    # SQLAlchemy tells MariaDB from MySQL by the server version string.
    assert observed["dialect"] == ("mysql", backend.binary.is_mariadb)
    # (mysql-connector's executemany reports no row count to SQLAlchemy)
    assert observed["insert_many_rowcount"] == (3 if driver == "pymysql" else -1)
    assert observed["update_same_rowcount"] == 1
    assert observed["names"] == ["Ada 😀", "Alan", "Grace", "Edsger", "Rolled back", "Kept"]
    assert observed["duplicate"] == ("IntegrityError", 1062)
    assert observed["streamed"] == [((1, 1), (2, 4)), ((3, 9), (4, 16))]


def _orm(t: Target, driver: str) -> dict[str, Any]:
    tag = t.table(driver[:5])

    class Base(orm.DeclarativeBase):
        pass

    class Team(Base):
        __tablename__ = f"teams_{tag}"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        name: orm.Mapped[str] = orm.mapped_column(sa.String(40), unique=True)
        members: orm.Mapped[list[Member]] = orm.relationship(back_populates="team", cascade="all, delete-orphan", order_by="Member.id")

    class Member(Base):
        __tablename__ = f"members_{tag}"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        team_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(f"teams_{tag}.id"))
        name: orm.Mapped[str] = orm.mapped_column(sa.String(40))
        score: orm.Mapped[decimal.Decimal] = orm.mapped_column(sa.Numeric(8, 3), default=decimal.Decimal("0"))
        version: orm.Mapped[int] = orm.mapped_column(nullable=False)
        team: orm.Mapped[Team] = orm.relationship(back_populates="members")
        __mapper_args__ = {"version_id_col": version}

    engine = _engine(t, driver)
    out: dict[str, Any] = {}
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with orm.Session(engine) as session:
            team = Team(name="core 😀", members=[Member(name=f"m{i}", score=decimal.Decimal(i) / 8) for i in range(5)])
            session.add(team)
            session.add(Team(name="empty"))
            session.commit()
            out["ids"] = (team.id, [m.id for m in team.members])
        with orm.Session(engine) as session:
            loaded = session.scalars(sa.select(Team).options(orm.selectinload(Team.members)).order_by(Team.id)).all()
            out["loaded"] = [(t_.name, [(m.name, m.score, m.version) for m in t_.members]) for t_ in loaded]
            member = loaded[0].members[0]
            member.score = decimal.Decimal("9.125")
            session.commit()
            out["version_after_update"] = member.version
        # Optimistic concurrency: two sessions edit the same row; the second commit finds 0 rows
        # matched for its version and raises StaleDataError (needs exact affected-row counts).
        with orm.Session(engine) as first, orm.Session(engine) as second:
            a = first.get(Member, 2)
            b = second.get(Member, 2)
            assert a is not None and b is not None
            a.name = "first writer"
            first.commit()
            b.name = "second writer"
            try:
                second.commit()
                out["stale"] = "second commit accepted"
            except orm.exc.StaleDataError as exc:
                out["stale"] = type(exc).__name__
                second.rollback()
        with orm.Session(engine) as session:
            team = session.scalars(sa.select(Team).where(Team.name == "core 😀")).one()
            session.delete(team.members[-1])
            session.flush()
            with session.begin_nested():
                session.add(Member(team=team, name="nested"))
            try:
                with session.begin_nested():
                    session.add(Team(name="empty"))  # duplicate name
                    session.flush()
            except sa.exc.IntegrityError as exc:
                out["nested_error"] = exc.orig.args[0] if exc.orig.args else None
            session.commit()
            out["final"] = session.execute(
                sa.select(Member.name, Member.version).join(Team).where(Team.name == "core 😀").order_by(Member.id)
            ).all()
            out["count"] = session.scalar(sa.select(sa.func.count()).select_from(Member))
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return out


@pytest.mark.parametrize("driver", DRIVERS)
def test_sqlalchemy_orm(target: Target, direct: Target, driver: str) -> None:
    observed, reference = _orm(target, driver), _orm(direct, driver)
    assert observed == reference
    assert observed["stale"] == "StaleDataError"
    assert observed["version_after_update"] == 2
    assert observed["nested_error"] == 1062
    assert [name for name, _ in observed["final"]] == ["m0", "first writer", "m2", "m3", "nested"]
