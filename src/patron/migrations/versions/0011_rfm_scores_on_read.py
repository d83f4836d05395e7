"""RFM scores and segments computed on read from each scope's cut points

Revision ID: 0011
Revises: 0010

Written by hand. A nightly RFM refresh at a million customers wrote some 53k ``rfm_scores``
rows, 24k of them only because a quantile cut point moved (their values had not changed):
each such row rewrote the key and four indexes (docs/benchmarks.md). The scores are a step
function of the values and the scope's cut points, which the refresh already keeps; they now
live as twelve columns of the scope's ``rfm_refreshes`` row (``r_cut2`` .. ``m_cut5``: a value
scores 1 + the cut points it is strictly above, NULL: nobody scores that high), and
``rfm_scores`` loses ``r_score``, ``f_score``, ``m_score``, ``segment`` and the
``(scope, segment)`` index (patron.analytics.rfm_read).

The cut points of scopes already scored are taken from their rows so that every row keeps its
scores: the largest value of a lower score, or, when no row scores lower, a value below
every other (nobody is below it). Going back computes the four columns from the cut points.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DIMS = (("r", "last_order_at", sa.DateTime(timezone=True)), ("f", "frequency", sa.Integer()),
        ("m", "monetary", sa.BigInteger()))
LEVELS = (2, 3, 4, 5)
GRID = {  # patron.analytics.model.SEGMENT_GRID, as it was when this was written
    5: ("new", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
}


def _lowest(dim: str, dialect: str) -> object:
    if dim == "r":
        return ("0001-01-01 00:00:00.000000" if dialect == "sqlite"
                else dt.datetime(1, 1, 1, tzinfo=dt.UTC))
    return -1 if dim == "f" else -(2 ** 62)


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    with op.batch_alter_table("rfm_refreshes") as batch:
        for d, _col, type_ in DIMS:
            for level in LEVELS:
                batch.add_column(sa.Column(f"{d}_cut{level}", type_, nullable=True))
    cuts: dict[str, dict[str, object]] = {}
    for d, col, _type in DIMS:
        groups: dict[str, dict[int, object]] = {}
        for scope, level, top in bind.execute(sa.text(
                f"SELECT scope, {d}_score, MAX({col}) FROM rfm_scores "  # noqa: S608
                f"GROUP BY scope, {d}_score")):
            groups.setdefault(scope, {})[int(level)] = top
        for scope, tops in groups.items():
            for level in LEVELS:
                below = [tops[g] for g in tops if g < level]
                cut = (max(below) if below  # type: ignore[type-var]
                       else _lowest(d, dialect) if any(g >= level for g in tops) else None)
                cuts.setdefault(scope, {})[f"{d}_cut{level}"] = cut
    for scope, values in cuts.items():
        names = sorted(values)
        bind.execute(sa.text(
            f"UPDATE rfm_refreshes SET {', '.join(f'{n} = :{n}' for n in names)} "  # noqa: S608
            "WHERE scope = :scope"), {"scope": scope, **values})
    op.drop_index("ix_rfm_scores_scope_segment", table_name="rfm_scores")
    with op.batch_alter_table("rfm_scores") as batch:
        for name in ("r_score", "f_score", "m_score", "segment"):
            batch.drop_column(name)


def _score_sql(d: str, col: str) -> str:
    parts = [f"CASE WHEN rfm_scores.{col} > (SELECT {d}_cut{level} "  # noqa: S608
             f"FROM rfm_refreshes rr WHERE rr.scope = rfm_scores.scope) THEN 1 ELSE 0 END"
             for level in LEVELS]
    return "1 + " + " + ".join(parts)


def downgrade() -> None:
    with op.batch_alter_table("rfm_scores") as batch:
        for name in ("r_score", "f_score", "m_score"):
            batch.add_column(sa.Column(name, sa.SmallInteger(), nullable=False,
                                       server_default="1"))
        batch.add_column(sa.Column("segment", sa.String(24), nullable=False,
                                   server_default="lost"))
    op.execute("UPDATE rfm_scores SET " + ", ".join(  # noqa: S608
        f"{d}_score = {_score_sql(d, col)}" for d, col, _t in DIMS))
    whens = " ".join(f"WHEN {r * 10 + c} THEN '{name}'" for r, names in GRID.items()
                     for c, name in enumerate(names, start=1))
    op.execute(f"UPDATE rfm_scores SET segment = CASE r_score * 10 + "  # noqa: S608
               f"(f_score + m_score + 1) / 2 {whens} ELSE 'lost' END")
    with op.batch_alter_table("rfm_scores") as batch:
        for name in ("r_score", "f_score", "m_score", "segment"):
            batch.alter_column(name, server_default=None)
    op.create_index("ix_rfm_scores_scope_segment", "rfm_scores", ["scope", "segment"])
    with op.batch_alter_table("rfm_refreshes") as batch:
        for d, _col, _type in DIMS:
            for level in LEVELS:
                batch.drop_column(f"{d}_cut{level}")
