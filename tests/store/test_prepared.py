"""Statements run on the driver's cursor (chainlets.store.prepared) do what `Connection.execute`
does with them: the same rows, JSON encoded the same way, the driver's errors raised as
SQLAlchemy's, on SQLite and PostgreSQL."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from chainlets.store.dialect import create_sync_engine, database_url
from chainlets.store.prepared import Prepared

metadata = sa.MetaData()
items = sa.Table("prepared_items", metadata,
                 sa.Column("id", sa.String(16), primary_key=True),
                 sa.Column("n", sa.Integer, nullable=False),
                 sa.Column("doc", sa.JSON(none_as_null=True)))

INSERT = Prepared(sa.insert(items))
BUMP = Prepared(sa.update(items).where(items.c.id == sa.bindparam("b_id")).values(
    n=items.c.n + sa.bindparam("b_by", type_=sa.Integer)).returning(items.c.id, items.c.n))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{request.getfixturevalue('tmp_path') / 'prepared.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_sync_engine(database_url(url))
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def test_rows_written_and_read_back_as_execute_would(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        INSERT.run_many(conn, [{"id": "a", "n": 1, "doc": {"k": [1, "x"]}},
                               {"id": "b", "n": 2, "doc": None}])
        INSERT.run(conn, {"n": 3, "id": "c", "doc": {"z": True}}).close()  # any key order
        assert BUMP.first(conn, {"b_id": "a", "b_by": 5, "doc": {"k": "new"}}) == {
            "id": "a", "n": 6}
        assert BUMP.first(conn, {"b_id": "nobody", "b_by": 1}) is None
        assert BUMP.rowcount(conn, {"b_id": "b", "b_by": 1}) == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(items).order_by(items.c.id)).all()
    assert [tuple(r) for r in rows] == [("a", 6, {"k": "new"}), ("b", 3, None),
                                        ("c", 3, {"z": True})]


def test_a_driver_error_is_raised_as_sqlalchemys(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        INSERT.run_many(conn, [{"id": "a", "n": 1, "doc": None}])
        INSERT.run(conn, {"id": "a", "n": 2, "doc": None})
    with engine.connect() as conn:  # rolled back as a whole
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar_one() == 0
