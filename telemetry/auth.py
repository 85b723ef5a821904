"""Registration: the protocol version client and daemon speak (``PROTO_VERSION``), and the
session tokens RegisterWorker issues and every publish and control stream carries.

A token is 32 random bytes (URL-safe base64), issued per RegisterWorker call and valid
for exactly the run it was issued for. The daemon stores only its SHA-256 in the
``sessions`` table, so a restart on the same database keeps accepting the tokens of
sessions that were live (a proxy reconnecting after a daemon restart does not need to
register again), while the database file never holds a usable token. Tokens do not expire:
they live as long as the run's data does (a spool replayed days later still lands).
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from telemetry.store import SessionRow

#: The wire contract a client asks for and the daemon accepts in RegisterWorker.
PROTO_VERSION = "MOSAIC/1.0"
METADATA_KEY = "authorization"
SCHEME = "bearer"


@dataclass(frozen=True, slots=True)
class Session:
    """Who a valid token belongs to."""
    run_id: str
    worker_id: str
    worker_kind: str


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token in ``authorization: Bearer <token>`` gRPC metadata, or None."""
    for key, value in metadata or ():
        if key.lower() != METADATA_KEY:
            continue
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == SCHEME and token.strip():
            return token.strip()
    return None


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Client-side metadata carrying ``token``."""
    return ((METADATA_KEY, f"Bearer {token}"),)


class SessionTokens:
    """The tokens a daemon accepts: loaded from the store at start, extended by ``issue``."""

    def __init__(self, rows: Iterable[SessionRow] = ()) -> None:
        self._sessions: dict[str, Session] = {
            r.token_sha256: Session(r.run_id, r.worker_id, r.worker_kind) for r in rows}

    def issue(self, run_id: str, worker_id: str, worker_kind: str) -> tuple[str, SessionRow]:
        """A new token for ``run_id`` and the row to persist for it."""
        token = secrets.token_urlsafe(32)
        row = SessionRow(token_digest(token), run_id, worker_id, worker_kind, time.time_ns())
        self._sessions[row.token_sha256] = Session(run_id, worker_id, worker_kind)
        return token, row

    def verify(self, token: str | None) -> Session | None:
        """The session ``token`` belongs to, or None when it is missing or unknown."""
        if not token:
            return None
        return self._sessions.get(token_digest(token))
