"""Conductors and leases in the JSON store (several agents on one site; docs/scale-out.md).

A mixin of :class:`store.jsonstore.JsonStore`, kept apart so each module stays readable; it
needs the store's ``_writing`` and ``_reading`` transactions, declared here.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager

from store.base import check_holder, check_lease, check_name, check_ttl, resolve_now
from store.errors import StoreError
from store.jsonfile import JsonState, Transaction
from store.model import Conductor, Lease
from store.plan import LeaseRow, lease_after_acquire, lease_after_renew, lease_current


def fence_holds(state: JsonState, fence: Lease | None, at: float) -> bool:
    """True without a fence, or while the fence is still its holder's current lease."""
    if fence is None:
        return True
    return lease_current(check_lease(fence), state.leases.get(fence.name), at)


class JsonConductors(abc.ABC):
    @abc.abstractmethod
    def _writing(self) -> AbstractContextManager[Transaction]:
        """A read-modify-write under the exclusive lock."""

    @abc.abstractmethod
    def _reading(self) -> AbstractContextManager[JsonState]:
        """The current state under the shared lock."""

    # --- several agents on one site -------------------------------------------------------

    def server_time(self) -> float:
        return resolve_now(None)

    def register_conductor(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        return self._beat(host, now, info, restart=True)

    def heartbeat(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        return self._beat(host, now, info, restart=False)

    def _beat(self, host: str, now: float | None, info: str | None, *, restart: bool) -> Conductor:
        host = check_name("host", host)
        if info is not None and not isinstance(info, str):
            raise StoreError(f"info: must be a string or None, got {info!r}")
        at = resolve_now(now)
        with self._writing() as txn:
            old = txn.state.conductors.get(host)
            if old is None or restart:
                conductor = Conductor(host, at, at, info)
            else:
                kept = old.info if info is None else info
                conductor = Conductor(host, old.started_at, at, kept)
            txn.state.conductors[host] = conductor
            txn.dirty = True
        return conductor

    def list_conductors(self) -> list[Conductor]:
        with self._reading() as state:
            return sorted(state.conductors.values(), key=lambda c: c.host)

    def unregister(self, host: str) -> bool:
        host = check_name("host", host)
        with self._writing() as txn:
            found = txn.state.conductors.pop(host, None) is not None
            txn.dirty = found
        return found

    def acquire_lease(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> Lease | None:
        name = check_name("lease", name)
        holder = check_holder(holder)
        lifetime = check_ttl(ttl)
        at = resolve_now(now)
        with self._writing() as txn:
            lease = lease_after_acquire(name, txn.state.leases.get(name), holder, at, lifetime)
            if lease is not None:
                txn.state.leases[name] = LeaseRow(lease.holder, lease.token, lease.expires_at)
                txn.dirty = True
        return lease

    def renew_lease(self, lease: Lease, *, ttl: float, now: float | None = None) -> Lease | None:
        lease = check_lease(lease)
        lifetime = check_ttl(ttl)
        at = resolve_now(now)
        with self._writing() as txn:
            renewed = lease_after_renew(lease, txn.state.leases.get(lease.name), at, lifetime)
            if renewed is not None:
                txn.state.leases[lease.name] = LeaseRow(
                    renewed.holder, renewed.token, renewed.expires_at
                )
                txn.dirty = True
        return renewed

    def release_lease(self, lease: Lease) -> bool:
        lease = check_lease(lease)
        with self._writing() as txn:
            row = txn.state.leases.get(lease.name)
            if row is None or (row.holder, row.token) != (lease.holder, lease.token):
                return False
            txn.state.leases[lease.name] = LeaseRow(None, row.token, None)
            txn.dirty = True
        return True

    def list_leases(self) -> list[Lease]:
        with self._reading() as state:
            return [
                Lease(name, row.holder, row.token, float(row.expires_at or 0.0))
                for name, row in sorted(state.leases.items())
                if row.holder is not None
            ]
