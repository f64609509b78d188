"""The controller lease: which controller is active, held in the PostgreSQL statestore and fenced.

One row of `controller_lease` names the active controller (`holder`, its API `address`), the `epoch` it
took the lease in, and `expires_at`. All times are the database's (`now()`), so the hosts' clocks do not
matter. The rules:

- **take**: in one transaction, lock the row (`FOR UPDATE`); if it is missing, expired, or already ours,
  write our holder with `epoch + 1` and a new expiry. Two controllers racing serialise on the row lock
  (or on the primary key when inserting the first row): exactly one wins each epoch.
- **renew**: `UPDATE ... SET expires_at = now() + ttl WHERE epoch = ours`; no row updated means another
  controller took the lease: we lost it.
- **fence**: every write transaction of the active controller first reads the row `FOR SHARE` and goes
  on only if the epoch is still ours (`SQLStore.set_write_fence`). A take-over's `UPDATE` needs the row
  exclusively, so it waits for every write transaction that passed the fence to end; once it commits,
  every later write of the old controller sees the new epoch and is rolled back (`LeaseLost`). So the
  writes of two controllers never interleave, however late the old one notices, without any assumption
  on timing, pauses or clocks: that is why a lease row is used rather than an advisory lock held on a
  session, which the writes on the store's other connections could not check.
- **release** (clean shutdown): expire the lease now, so a standby takes over at once.

SQLite has no lease (its database belongs to one host and one controller), and `--standby` is refused there.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from scaleout_server.store.base import LeaseLost, StoreError
from scaleout_server.store.engine import connection_errors, make_engine, parse_url, safe_url
from scaleout_server.store.sql import lease_table

log = logging.getLogger(__name__)

LEASE_NAME = "controller"
LEASE_SECONDS = 6.0  # a lease not renewed for this long may be taken over
RENEW_EVERY = 1.5  # the active controller renews this often (4 tries before its lease runs out)
STANDBY_POLL = 1.0  # a standby tries to take the lease this often

__all__ = ["ControllerLease", "LeaseHolder", "LeaseLost", "default_holder", "supports_lease"]


@dataclass(frozen=True)
class LeaseHolder:
    holder: str
    address: str
    epoch: int
    expires_at: datetime
    expired: bool


def default_holder() -> str:
    """`host:pid`: names this process in the lease row and in messages."""
    return f"{socket.gethostname()}:{os.getpid()}"


def supports_lease(url: str) -> bool:
    return parse_url(url).get_backend_name() == "postgresql"


class ControllerLease:
    """The lease as seen by one controller process, on its own small connection pool (so renewing never
    queues behind the store's own transactions)."""

    def __init__(self, url: str, address: str, holder: str | None = None, ttl: float = LEASE_SECONDS,
                 name: str = LEASE_NAME) -> None:
        if not supports_lease(url):
            raise ValueError(f"the controller lease needs a PostgreSQL statestore, not {safe_url(url)}")
        self.url = url
        self.address = address
        self.holder = holder or default_holder()
        self.ttl = ttl
        self.name = name
        self.epoch: int | None = None  # ours while we hold the lease
        self._engine: Engine = make_engine(url).execution_options(isolation_level="READ COMMITTED")

    def _expiry(self) -> object:
        return func.now() + timedelta(seconds=self.ttl)

    def current(self) -> LeaseHolder | None:
        """Who holds the lease (expired or not); None before any controller took it."""
        with connection_errors(self.url), self._engine.begin() as conn:
            row = conn.execute(select(lease_table, (lease_table.c.expires_at <= func.now()).label("expired"))
                               .where(lease_table.c.name == self.name)).mappings().first()
        if row is None:
            return None
        return LeaseHolder(row["holder"], row["address"], row["epoch"], row["expires_at"], bool(row["expired"]))

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or ours; True when we hold it now (a new epoch)."""
        try:
            with connection_errors(self.url), self._engine.begin() as conn:
                row = conn.execute(select(lease_table.c.epoch, lease_table.c.holder,
                                          (lease_table.c.expires_at <= func.now()).label("expired"))
                                   .where(lease_table.c.name == self.name).with_for_update()).first()
                values = {"holder": self.holder, "address": self.address, "acquired_at": func.now(),
                          "expires_at": self._expiry()}
                if row is None:
                    conn.execute(insert(lease_table).values(name=self.name, epoch=1, **values))
                    epoch = 1
                elif row.expired or row.holder == self.holder:
                    epoch = int(row.epoch) + 1
                    conn.execute(update(lease_table).where(lease_table.c.name == self.name)
                                 .values(epoch=epoch, **values))
                else:
                    return False
        except IntegrityError:  # another controller inserted the first row at the same moment
            return False
        self.epoch = epoch
        log.info("controller lease taken by %s (epoch %d, %s)", self.holder, epoch, self.address)
        return True

    def renew(self) -> bool:
        """Extend our lease; False when another controller took it meanwhile. Raises StoreUnavailable
        (or a driver error) when the database cannot be asked: the caller decides how long to keep trying."""
        if self.epoch is None:
            return False
        with connection_errors(self.url), self._engine.begin() as conn:
            result = conn.execute(update(lease_table).where(lease_table.c.name == self.name,
                                                            lease_table.c.epoch == self.epoch)
                                  .values(expires_at=self._expiry()))
        return result.rowcount == 1

    def fence(self, conn: Connection) -> None:
        """The write fence (`SQLStore.set_write_fence`): the first statement of every write transaction."""
        epoch = conn.execute(select(lease_table.c.epoch).where(lease_table.c.name == self.name)
                             .with_for_update(read=True)).scalar()
        if epoch is None or epoch != self.epoch:
            raise LeaseLost(f"this controller ({self.holder}, epoch {self.epoch}) lost the controller lease to "
                            f"epoch {epoch}: another controller is active, so this one writes nothing more")

    def release(self) -> None:
        """Let a standby take over at once (clean shutdown); errors are only logged."""
        if self.epoch is None:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(update(lease_table).where(lease_table.c.name == self.name,
                                                       lease_table.c.epoch == self.epoch)
                             .values(expires_at=func.now()))
            log.info("controller lease released (epoch %d)", self.epoch)
        except (OperationalError, StoreError) as exc:
            log.warning("could not release the controller lease (it expires on its own): %s", exc)
        self.epoch = None

    def close(self) -> None:
        self._engine.dispose()
