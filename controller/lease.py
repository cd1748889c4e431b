"""Leases: a job only one controller of those sharing a database does at a time (the sweeps),
held by name in the `leases` table (docs/architecture.md#several-controllers).

`take` inserts the lease or, in the same statement, takes it over when it is this holder's
or expired (INSERT … ON CONFLICT DO UPDATE … WHERE), so two controllers racing for it never
both win; the holder renews it every pass, so it passes on `seconds` after the holder dies.
Times come from the database's clock on PostgreSQL, so controllers on hosts whose clocks
disagree still agree on expiry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from controller.models import Lease
from schemas.common import utcnow

SWEEPER = "sweeper"


def database_now(session: Session) -> datetime:
    """Now by the database's clock (PostgreSQL), else this host's."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value
    return utcnow()


def take(session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take or renew lease `name` for `holder` until `seconds` from now; False (and nothing
    changed) while another holder's lease runs. Commits."""
    now = database_now(session)
    expires = now + timedelta(seconds=seconds)
    table = Lease.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(name=name, holder=holder, expires_at=expires)
        .on_conflict_do_update(
            index_elements=[table.c.name],
            set_={"holder": holder, "expires_at": expires},
            where=or_(table.c.holder == holder, table.c.expires_at <= now),
        )
        .returning(table.c.holder)
    )
    won = session.execute(statement).first() is not None
    session.commit()
    return won


def release(session: Session, name: str, holder: str) -> None:
    """Give lease `name` up, if `holder` holds it, so another controller takes it at once. Commits."""
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
    session.commit()


def holder_of(session: Session, name: str) -> str | None:
    """Who holds lease `name` now (None when nobody does, or it expired)."""
    lease = session.get(Lease, name)
    if lease is None or lease.expires_at <= database_now(session):
        return None
    return lease.holder
