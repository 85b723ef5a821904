"""The daemon's durable store: one SQLite file in WAL mode.

Two halves with one job each:

* ``TelemetryStore`` opens the file (creating the schema when asked) and answers reads.
  Reads are blocking and thread-safe (one connection per thread); async code calls them
  through ``asyncio.to_thread``. The CLI, the exporter and the dashboard use it directly:
  WAL lets them read while the daemon writes.
* ``StoreWriter`` is the only writer: one thread that owns one connection, takes jobs from
  the event loop, coalesces whatever is queued (many publish streams' batches) into one
  transaction, and hands results back to the loop after COMMIT. A single writer is what
  makes the per-run sequence numbers gap-free without locking, and coalescing is what makes
  ingest fast (one commit per many batches, ``executemany`` with one prepared statement).

Record identity and order (what every reader and the wire contract rely on):

* natural keys: step (run, agent, episode, step), episode (run, agent, episode), coordination
  message (run, agent, message_index). A record whose key is already stored is dropped.
* ``seq_id``: per run and per kind (steps, episodes, messages each count 1, 2, 3, ...),
  assigned at insert to newly stored records only, so it is gap-free and is the run's store
  order. A row's ``id`` is ``(run_key << 40) | seq_id``: each run's records sit together in
  seq order in the table's own b-tree, so a replay is a range scan and no extra index is
  needed on the write path.
* non-finite rewards: stored exactly. SQLite keeps the infinities as REAL but would turn
  NaN into NULL, so a NaN ``reward`` / ``total_reward`` is stored as the text ``'nan'`` in
  its REAL column (which keeps it, untouched by affinity) and read back as ``float('nan')``.
  Integers that SQLite cannot hold are refused per record before the store sees them
  (``telemetry.validate``).
* durability: ``synchronous=NORMAL`` in WAL mode. A committed transaction survives the
  daemon being killed (SIGKILL); an operating-system crash or power loss may lose the last
  few transactions.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telemetry.columns import ColumnsError
from telemetry.columns import row_values as column_rows
from telemetry.validate import REWARD_POSITION, Refusal, has_nan, screen

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_RUN_KEY = (1 << (63 - SEQ_BITS)) - 1
KINDS = ("steps", "episodes", "messages")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_key INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    config_json TEXT NOT NULL DEFAULT '',
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    last_heartbeat_ns INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT NOT NULL DEFAULT '',
    seq_id INTEGER NOT NULL,
    control_json TEXT NOT NULL DEFAULT '{{}}'
);
-- Every announced run change (WatchRuns replays this history from since_seq).
CREATE TABLE IF NOT EXISTS run_changes (
    seq_id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    digest TEXT NOT NULL,
    config_json TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    last_heartbeat_ns INTEGER NOT NULL,
    failure_reason TEXT NOT NULL,
    control_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    worker_kind TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    run_key INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (run_key, agent_id)
) WITHOUT ROWID;
-- id = (run_key << {SEQ_BITS}) | seq_id: a run's records are stored in seq order.
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    run_key INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    episode_index INTEGER NOT NULL,
    step_index INTEGER NOT NULL,
    action_json TEXT NOT NULL,
    observation_json TEXT NOT NULL,
    reward REAL NOT NULL,
    terminated INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    policy_label TEXT NOT NULL,
    backend TEXT NOT NULL,
    render_hint_json TEXT NOT NULL,
    frame_ref TEXT NOT NULL,
    payload_version INTEGER NOT NULL,
    render_payload_json TEXT NOT NULL,
    episode_seed INTEGER NOT NULL,
    worker_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS steps_natural_key
    ON steps(run_key, agent_id, episode_index, step_index);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    run_key INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    episode_index INTEGER NOT NULL,
    total_reward REAL NOT NULL,
    steps INTEGER NOT NULL,
    terminated INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    metadata_json TEXT NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    worker_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS episodes_natural_key
    ON episodes(run_key, agent_id, episode_index);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    run_key INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    message_index INTEGER NOT NULL,
    direction TEXT NOT NULL,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    episode_index INTEGER NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    worker_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_natural_key
    ON messages(run_key, agent_id, message_index);
"""


class StoreError(Exception):
    """The database file cannot be used (missing, unreadable, or from another program)."""


class InvalidRecords(ValueError):
    """A publish job that cannot be stored at all (wrong run_id, unknown run, misaligned columns)."""

#: How a NaN reward is kept in its REAL column (SQLite would store a NaN float as NULL).
NAN_TEXT = "nan"


# ---------------------------------------------------------------------------------------
# Rows returned by reads. Field names are the proto's; timestamps are integer nanoseconds
# since the epoch (0: the producer sent none).
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StepRow:
    """One stored step; ``seq_id`` is its place in the run's step order."""
    seq_id: int
    run_id: str
    agent_id: str
    episode_index: int
    step_index: int
    action_json: str
    observation_json: str
    reward: float
    terminated: bool
    truncated: bool
    timestamp_ns: int
    policy_label: str
    backend: str
    render_hint_json: str
    frame_ref: str
    payload_version: int
    render_payload_json: str
    episode_seed: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    """One stored episode summary; ``seq_id`` is its place in the run's episode order."""
    seq_id: int
    run_id: str
    agent_id: str
    episode_index: int
    total_reward: float
    steps: int
    terminated: bool
    truncated: bool
    metadata_json: str
    timestamp_ns: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One stored coordination message (an XMPP message an agent sent or received)."""
    seq_id: int
    run_id: str
    agent_id: str
    message_index: int
    direction: str
    peer: str
    kind: str
    bytes: int
    episode_index: int
    timestamp_ns: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as stored. ``status`` is the RunStatus number (see ``telemetry.runs.RunStatus``);
    ``seq_id`` is the global order of run changes (WatchRuns); ``control_json`` holds the
    run's standing control state (paused agents, rate caps)."""
    run_id: str
    status: int
    digest: str
    config_json: str
    created_at_ns: int
    updated_at_ns: int
    last_heartbeat_ns: int
    failure_reason: str
    seq_id: int
    control_json: str = "{}"


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session token issued by RegisterWorker, stored as its SHA-256 only."""
    token_sha256: str
    run_id: str
    worker_id: str
    worker_kind: str
    created_at_ns: int


@dataclass(frozen=True, slots=True)
class RecordCounts:
    """How many records of each kind a run holds (equal to the last seq_id: seqs are gap-free)."""
    steps: int
    episodes: int
    messages: int


_STEP_COLUMNS = ("agent_id, episode_index, step_index, action_json, observation_json, reward, "
                 "terminated, truncated, timestamp_ns, policy_label, backend, render_hint_json, "
                 "frame_ref, payload_version, render_payload_json, episode_seed, worker_id")
_EPISODE_COLUMNS = ("agent_id, episode_index, total_reward, steps, terminated, truncated, "
                    "metadata_json, timestamp_ns, worker_id")
_MESSAGE_COLUMNS = ("agent_id, message_index, direction, peer, kind, bytes, episode_index, "
                    "timestamp_ns, worker_id")
_RUN_COLUMNS = ("run_id, status, digest, config_json, created_at_ns, updated_at_ns, "
                "last_heartbeat_ns, failure_reason, seq_id, control_json")


#: What a stored record costs beyond its text and blobs, for ``row_bytes`` (numbers, framing).
ROW_OVERHEAD_BYTES = 64


def row_bytes(row: tuple) -> int:
    """About how many bytes a raw row holds, and its wire message will: the lengths of its
    strings and blobs plus ``ROW_OVERHEAD_BYTES`` (what byte-bounded replay pages count)."""
    return ROW_OVERHEAD_BYTES + sum(len(value) for value in row if isinstance(value, (str, bytes)))


def _bool_row(row_type: type, flags: tuple[str, ...], reward: str | None = None) -> Callable[[str, tuple], Any]:
    """Build a converter from a (seq_id, *columns) tuple to ``row_type`` with the run_id
    inserted, the SQLite 0/1 ``flags`` turned back into bools and the ``reward`` column's
    NaN text (``NAN_TEXT``) back into a float."""
    names = [f for f in row_type.__dataclass_fields__]
    flag_positions = [names.index(f) for f in flags]
    reward_position = names.index(reward) if reward else None

    def convert(run_id: str, raw: tuple) -> Any:
        values = [raw[0], run_id, *raw[1:]]
        for i in flag_positions:
            values[i] = bool(values[i])
        if reward_position is not None and type(values[reward_position]) is str:
            values[reward_position] = float(values[reward_position])
        return row_type(*values)

    return convert


_READS: dict[str, tuple[str, Callable[[str, tuple], Any]]] = {
    "steps": (_STEP_COLUMNS, _bool_row(StepRow, ("terminated", "truncated"), "reward")),
    "episodes": (_EPISODE_COLUMNS, _bool_row(EpisodeRow, ("terminated", "truncated"), "total_reward")),
    "messages": (_MESSAGE_COLUMNS, _bool_row(MessageRow, ())),
}


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (we issue BEGIN/COMMIT ourselves)."""
    mode = "rwc" if create else "rw"
    uri = f"file:{Path(path).resolve().as_posix()}?mode={mode}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn
    except sqlite3.Error as exc:
        what = "create or open" if create else "open"
        raise StoreError(f"cannot {what} database {path}: {exc}") from None


class TelemetryStore:
    """The SQLite store: schema, and the read API the daemon, CLI and dashboard use.

    ``TelemetryStore(path)`` creates the file and schema when missing (the daemon);
    ``TelemetryStore(path, create=False)`` refuses a missing file (the CLI must not leave
    empty databases behind on a typo). Raises ``StoreError`` with a readable message.
    Every read method is blocking and safe to call from any thread.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._connections: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._run_keys: dict[str, int] = {}
        if create and not Path(self.path).parent.is_dir():
            raise StoreError(f"cannot create database {self.path}: folder "
                             f"{Path(self.path).parent} does not exist")
        conn = _connect(self.path, create=create)
        try:
            self._prepare(conn, create)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot use database {self.path}: {exc}") from None
        except StoreError:
            conn.close()
            raise
        self._local.conn = (conn, threading.Lock())
        self._connections.append(self._local.conn)

    def _prepare(self, conn: sqlite3.Connection, create: bool) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and tables == 0:
            if not create:
                raise StoreError(f"{self.path} is an empty database, not a telemetry store")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} is not a telemetry store of schema version "
                             f"{SCHEMA_VERSION} (user_version={version}); use another --db file")
        self.store_id = self._identity(conn, create)

    @staticmethod
    def _identity(conn: sqlite3.Connection, create: bool) -> str:
        """This store's id, made once when the daemon first opens it: a proxy's spool says
        which store its records were meant for, and replays them into that one only."""
        if create:
            conn.execute("CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT OR IGNORE INTO store_meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        try:
            row = conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
        except sqlite3.OperationalError:   # a store no daemon has opened since store ids began
            return ""
        return row[0] if row else ""

    def _conn(self) -> tuple[sqlite3.Connection, threading.Lock]:
        """This thread's connection and the lock held while it is in use (``close`` takes
        it, so a connection is never closed under a running query)."""
        held = getattr(self._local, "conn", None)
        if held is None:
            with self._lock:
                if self._closed:
                    raise StoreError(f"the store {self.path} is closed")
                held = (_connect(self.path, create=False), threading.Lock())
                self._connections.append(held)
            self._local.conn = held
        return held

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        conn, in_use = self._conn()
        with in_use:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            return conn.execute(sql, args).fetchall()

    def _query_bounded(self, sql: str, args: tuple, max_bytes: int) -> list[tuple]:
        """The rows of ``sql`` up to and including the first that brings their size (text and
        blob lengths, plus ``ROW_OVERHEAD_BYTES`` each) to ``max_bytes``: at least one row when
        there is any, so a single record larger than the bound still gets through."""
        conn, in_use = self._conn()
        with in_use:
            if self._closed:
                raise StoreError(f"the store {self.path} is closed")
            rows: list[tuple] = []
            total = 0
            cursor = conn.execute(sql, args)
            try:
                while total < max_bytes and (row := cursor.fetchone()) is not None:
                    rows.append(row)
                    total += row_bytes(row)
            finally:
                cursor.close()
            return rows

    def close(self) -> None:
        """Close every connection this store opened (from any thread; waits for running reads)."""
        with self._lock:
            self._closed = True
            for conn, in_use in self._connections:
                with in_use:
                    conn.close()
            self._connections.clear()

    def run_key(self, run_id: str) -> int | None:
        """The run's integer key, or None when the run is unknown."""
        key = self._run_keys.get(run_id)
        if key is None:
            rows = self._query("SELECT run_key FROM runs WHERE run_id = ?", (run_id,))
            if not rows:
                return None
            key = self._run_keys[run_id] = rows[0][0]
        return key

    # -- runs ------------------------------------------------------------------------------

    def list_runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        return [RunRow(*r) for r in self._query(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at_ns, run_key")]

    def get_run(self, run_id: str) -> RunRow | None:
        """One run, or None."""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return RunRow(*rows[0]) if rows else None

    def read_runs_since(self, since_seq: int = 0, limit: int = 1000) -> list[RunRow]:
        """Every run change with a global seq_id above ``since_seq``, in seq order, each as
        the run's state right after that change (the replay half of WatchRuns)."""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM run_changes WHERE seq_id > ? ORDER BY seq_id LIMIT ?",
                           (since_seq, limit))
        return [RunRow(*r) for r in rows]

    def last_run_change_seq(self) -> int:
        """The global seq_id of the newest committed run change (0: none yet)."""
        return self._query("SELECT coalesce(max(seq_id), 0) FROM run_changes")[0][0]

    def load_sessions(self) -> list[SessionRow]:
        """Every issued session (token digests), for the daemon to accept after a restart."""
        rows = self._query("SELECT token_sha256, run_id, worker_id, worker_kind, created_at_ns FROM sessions")
        return [SessionRow(*r) for r in rows]

    # -- telemetry -------------------------------------------------------------------------

    def _read(self, kind: str, run_id: str, since_seq: int, agent_id: str | None, limit: int,
              max_bytes: int | None = None) -> list:
        key = self.run_key(run_id)
        if key is None:
            return []
        columns, convert = _READS[kind]
        low = (key << SEQ_BITS) | min(max(since_seq, 0), SEQ_MASK)
        high = (key << SEQ_BITS) | SEQ_MASK
        sql = f"SELECT seq_id, {columns} FROM {kind} WHERE id > ? AND id <= ?"
        args: tuple = (low, high)
        if agent_id:
            sql += " AND agent_id = ?"
            args += (agent_id,)
        sql += " ORDER BY id LIMIT ?"
        args += (limit,)
        rows = self._query(sql, args) if max_bytes is None else self._query_bounded(sql, args, max_bytes)
        return [convert(run_id, r) for r in rows]

    def read_steps(self, run_id: str, since_seq: int = 0, agent_id: str | None = None,
                   limit: int = 1000, max_bytes: int | None = None) -> list[StepRow]:
        """Steps of ``run_id`` with seq_id > ``since_seq`` in seq order, at most ``limit``;
        only ``agent_id``'s when given. With ``max_bytes``, the page also ends once its rows
        hold that many bytes (see ``row_bytes``; never fewer than one row). Unknown run: []."""
        return self._read("steps", run_id, since_seq, agent_id, limit, max_bytes)

    def read_episodes(self, run_id: str, since_seq: int = 0, agent_id: str | None = None,
                      limit: int = 1000, max_bytes: int | None = None) -> list[EpisodeRow]:
        """Episodes of ``run_id`` with seq_id > ``since_seq`` in seq order (see read_steps)."""
        return self._read("episodes", run_id, since_seq, agent_id, limit, max_bytes)

    def read_messages(self, run_id: str, since_seq: int = 0, agent_id: str | None = None,
                      limit: int = 1000, max_bytes: int | None = None) -> list[MessageRow]:
        """Coordination messages of ``run_id`` with seq_id > ``since_seq`` (see read_steps)."""
        return self._read("messages", run_id, since_seq, agent_id, limit, max_bytes)

    def latest_render_hint(self, run_id: str, agent_id: str, before_seq: int, within: int = 100_000) -> str:
        """The newest non-empty render hint of ``agent_id`` among the run's steps with seq_id
        in (``before_seq`` - ``within``, ``before_seq``]; "" when there is none. Agents attach
        the hint to each episode's first step only, so a view that starts in the middle of an
        episode looks it up here (bounded, so an environment without hints costs no full scan)."""
        key = self.run_key(run_id)
        if key is None or before_seq <= 0:
            return ""
        low = (key << SEQ_BITS) | max(0, before_seq - within)
        high = (key << SEQ_BITS) | min(before_seq, SEQ_MASK)
        rows = self._query("SELECT render_hint_json FROM steps WHERE id > ? AND id <= ? AND agent_id = ? "
                           "AND render_hint_json != '' ORDER BY id DESC LIMIT 1", (low, high, agent_id))
        return rows[0][0] if rows else ""

    def agent_ids(self, run_id: str) -> list[str]:
        """The agents that published anything into ``run_id``, sorted."""
        key = self.run_key(run_id)
        if key is None:
            return []
        rows = self._query("SELECT agent_id FROM agents WHERE run_key = ? ORDER BY agent_id", (key,))
        return [r[0] for r in rows]

    def counts(self, run_id: str) -> RecordCounts:
        """How many steps, episodes and messages ``run_id`` holds."""
        key = self.run_key(run_id)
        if key is None:
            return RecordCounts(0, 0, 0)
        low, high = key << SEQ_BITS, (key << SEQ_BITS) | SEQ_MASK
        values = [self._query(f"SELECT max(id) FROM {kind} WHERE id > ? AND id <= ?", (low, high))[0][0]
                  for kind in KINDS]
        return RecordCounts(*[(v & SEQ_MASK) if v is not None else 0 for v in values])

    def next_episode_indexes(self, run_id: str) -> dict[str, int]:
        """Per agent of ``run_id``: one past the highest episode_index among its stored steps
        and episodes, where a resumed agent continues its numbering. Unknown run: {}."""
        key = self.run_key(run_id)
        if key is None:
            return {}
        following: dict[str, int] = {}
        for kind in ("steps", "episodes"):
            rows = self._query(f"SELECT agent_id, max(episode_index) FROM {kind} WHERE run_key = ? GROUP BY agent_id",
                               (key,))
            for agent_id, highest in rows:
                following[agent_id] = max(following.get(agent_id, 0), highest + 1)
        return following


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------

@dataclass
class IngestResult:
    """What one publish job did. ``accepted`` records were newly stored; ``dropped`` were
    already stored (same natural key, e.g. a retry or a spool replay) or repeated within the
    job. ``new_steps``/``new_episodes``/``new_messages`` are the stored records themselves (the
    publisher's protobuf messages, run_id possibly empty and seq_id not set), whose seq_ids are
    consecutive from ``first_*_seq``; the daemon completes them for the live hub after COMMIT.
    Steps and episodes that arrived as columns have no message: their entry in ``new_steps``
    (``new_episodes``) is None, and ``new_step_values`` (``new_episode_values``), aligned with
    it, holds every new row's values, from which ``telemetry.columns.step_message``
    (``episode_message``) builds one when someone wants it. ``refused`` lists the records
    not stored because the store cannot hold one of their values (``telemetry.validate``)."""
    run_id: str
    accepted: int = 0
    dropped: int = 0
    new_steps: list = field(default_factory=list)
    new_step_values: list = field(default_factory=list)
    first_step_seq: int = 0
    new_episodes: list = field(default_factory=list)
    new_episode_values: list = field(default_factory=list)
    first_episode_seq: int = 0
    new_messages: list = field(default_factory=list)
    first_message_seq: int = 0
    refused: list[Refusal] = field(default_factory=list)


def _check_run_ids(records: Sequence[Any], run_id: str) -> None:
    """Every record must name ``run_id`` or leave it empty (meaning the batch's). The store
    keeps the run as a key, so empty ones are only filled in when streamed out live."""
    for r in records:
        rid = r.run_id
        if rid and rid != run_id:
            raise InvalidRecords(f"record for run '{rid}' in a batch for run '{run_id}'")


# Row builders: a record's column values after (id, run_key, seq_id), which only the writer
# can assign. They run where the job is submitted (the event loop thread), so this Python
# work overlaps with the writer thread's SQLite work (which releases the GIL).

def _step_values(steps: Sequence[Any]) -> list[tuple]:
    return [
        (s.agent_id, s.episode_index, s.step_index, s.action_json, s.observation_json, s.reward,
         s.terminated, s.truncated, (ts := s.timestamp).seconds * 1_000_000_000 + ts.nanos, s.policy_label, s.backend,
         s.render_hint_json, s.frame_ref, s.payload_version, s.render_payload_json, s.episode_seed,
         s.worker_id)
        for s in steps
    ]


def _episode_values(episodes: Sequence[Any]) -> list[tuple]:
    return [
        (e.agent_id, e.episode_index, e.total_reward, e.steps, e.terminated, e.truncated, e.metadata_json,
         (ts := e.timestamp).seconds * 1_000_000_000 + ts.nanos, e.worker_id)
        for e in episodes
    ]


def _message_values(messages: Sequence[Any]) -> list[tuple]:
    return [
        (m.agent_id, m.message_index, m.direction, m.peer, m.kind, m.bytes, m.episode_index,
         (ts := m.timestamp).seconds * 1_000_000_000 + ts.nanos, m.worker_id)
        for m in messages
    ]


@dataclass(frozen=True)
class _KindSpec:
    """How one record kind is stored: its row builder, natural key and statements. The
    natural key is the first ``key_length`` row values."""
    table: str
    values: Callable[[Sequence[Any]], list[tuple]]
    key_length: int
    insert_sql: str
    exists_sql: str


def _spec(table: str, columns: str, key_fields: tuple[str, ...], build: Callable) -> _KindSpec:
    n = 3 + len(columns.split(","))
    where = " AND ".join(f"{f} = ?" for f in ("run_key",) + key_fields)
    if tuple(c.strip() for c in columns.split(",")[:len(key_fields)]) != key_fields:
        raise AssertionError(f"{table}: the natural key must be the first row values")
    return _KindSpec(
        table=table,
        values=build,
        key_length=len(key_fields),
        insert_sql=f"INSERT INTO {table} (id, run_key, seq_id, {columns}) VALUES ({', '.join('?' * n)})",
        exists_sql=f"SELECT 1 FROM {table} WHERE {where}",
    )


_SPECS = {
    "steps": _spec("steps", _STEP_COLUMNS, ("agent_id", "episode_index", "step_index"), _step_values),
    "episodes": _spec("episodes", _EPISODE_COLUMNS, ("agent_id", "episode_index"), _episode_values),
    "messages": _spec("messages", _MESSAGE_COLUMNS, ("agent_id", "message_index"), _message_values),
}


class _Job:
    """One unit of work for the writer thread, completed on the event loop after COMMIT."""
    __slots__ = ("size", "future", "on_commit")

    def __init__(self, size: int, future: asyncio.Future, on_commit: Callable[[Any], None] | None) -> None:
        self.size = size
        self.future = future
        self.on_commit = on_commit

    def apply(self, writer: "_WriterThreadState", conn: sqlite3.Connection) -> Any:
        raise NotImplementedError


class _IngestJob(_Job):
    """Records of one run. Built on the submitting thread: run_ids checked, column values
    extracted; the writer only numbers and inserts them."""
    __slots__ = ("run_id", "records", "values", "agents", "refused", "with_nan")

    def __init__(self, run_id: str, steps: Sequence[Any], episodes: Sequence[Any], messages: Sequence[Any],
                 future: asyncio.Future, on_commit: Callable[[Any], None] | None,
                 step_columns: Sequence[Any] = (), episode_columns: Sequence[Any] = ()) -> None:
        self.run_id = run_id
        self.records = {kind: records for kind, records in
                        (("steps", steps), ("episodes", episodes), ("messages", messages)) if records}
        for records in self.records.values():
            _check_run_ids(records, run_id)
        self.values = {kind: _SPECS[kind].values(records) for kind, records in self.records.items()}
        for kind, blocks in (("steps", step_columns), ("episodes", episode_columns)):
            if not blocks:
                continue
            try:
                rows = [row for block in blocks for row in column_rows(block)]
            except ColumnsError as exc:
                raise InvalidRecords(str(exc)) from None
            if rows:
                self.values[kind] = self.values.get(kind, []) + rows
                self.records[kind] = list(self.records.get(kind, ())) + [None] * len(rows)
        self.refused: list[Refusal] = []
        for kind in list(self.values):
            keep, refused = screen(kind, run_id, self.values[kind])
            if keep is not None:
                self.refused.extend(refused)
                self.values[kind] = [self.values[kind][i] for i in keep]
                self.records[kind] = [self.records[kind][i] for i in keep]
        self.with_nan = {kind for kind, values in self.values.items() if has_nan(values, kind)}
        super().__init__(sum(len(records) for records in self.records.values()), future, on_commit)
        self.agents = {v[0] for values in self.values.values() for v in values}

    def apply(self, writer: "_WriterThreadState", conn: sqlite3.Connection) -> IngestResult:
        run_key = writer.run_key(conn, self.run_id)
        result = IngestResult(self.run_id, refused=self.refused)
        writer.note_agents(conn, run_key, self.agents)
        for kind, records in self.records.items():
            values = self.values[kind]
            if not records:
                continue
            stored = _nan_as_text(values, REWARD_POSITION[kind]) if kind in self.with_nan else values
            keep, first_seq = writer.insert(conn, run_key, kind, stored)
            new = records if keep is None else [records[i] for i in keep]
            result.accepted += len(new)
            result.dropped += len(records) - len(new)
            setattr(result, f"new_{kind}", new)
            setattr(result, f"first_{kind[:-1]}_seq", first_seq)
            if kind != "messages":
                setattr(result, f"new_{kind[:-1]}_values", values if keep is None else [values[i] for i in keep])
        return result


def record_values(kind: str, records: Sequence[Any]) -> list[tuple]:
    """The store rows (after id, run_key, seq_id) of protobuf records of ``kind``
    ("steps", "episodes" or "messages"), as ``telemetry.validate.screen`` checks them."""
    return _SPECS[kind].values(records)


def _nan_as_text(values: list[tuple], position: int) -> list[tuple]:
    """The rows with a NaN at ``position`` replaced by ``NAN_TEXT`` (see the module notes)."""
    return [row[:position] + (NAN_TEXT,) + row[position + 1:] if row[position] != row[position] else row
            for row in values]


class _SaveRunJob(_Job):
    __slots__ = ("row", "announce")

    def __init__(self, row: RunRow, announce: bool, future: asyncio.Future,
                 on_commit: Callable[[Any], None] | None) -> None:
        super().__init__(1, future, on_commit)
        self.row = row
        self.announce = announce

    def apply(self, writer: "_WriterThreadState", conn: sqlite3.Connection) -> RunRow:
        r = self.row
        cur = conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, digest = excluded.digest, "
            "config_json = excluded.config_json, updated_at_ns = excluded.updated_at_ns, "
            "last_heartbeat_ns = excluded.last_heartbeat_ns, failure_reason = excluded.failure_reason, "
            "seq_id = excluded.seq_id, control_json = excluded.control_json RETURNING run_key",
            (r.run_id, r.status, r.digest, r.config_json, r.created_at_ns, r.updated_at_ns,
             r.last_heartbeat_ns, r.failure_reason, r.seq_id, r.control_json))
        run_key = cur.fetchone()[0]
        cur.close()
        if run_key > MAX_RUN_KEY:
            raise StoreError(f"the store is full: run key {run_key} exceeds {MAX_RUN_KEY}")
        if self.announce:
            conn.execute(f"INSERT INTO run_changes ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (r.run_id, r.status, r.digest, r.config_json, r.created_at_ns, r.updated_at_ns,
                          r.last_heartbeat_ns, r.failure_reason, r.seq_id, r.control_json))
        return r


class _SaveSessionJob(_Job):
    __slots__ = ("row",)

    def __init__(self, row: SessionRow, future: asyncio.Future) -> None:
        super().__init__(1, future, None)
        self.row = row

    def apply(self, writer: "_WriterThreadState", conn: sqlite3.Connection) -> SessionRow:
        r = self.row
        conn.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                     (r.token_sha256, r.run_id, r.worker_id, r.worker_kind, r.created_at_ns))
        return r


class _WriterThreadState:
    """State only the writer thread touches: run keys, next seq per (run, kind), known agents.
    Caches are dropped whenever a transaction fails, and reloaded from the database."""

    def __init__(self) -> None:
        self.run_keys: dict[str, int] = {}
        self.last_seq: dict[tuple[int, str], int] = {}
        self.agents: set[tuple[int, str]] = set()

    def forget(self) -> None:
        self.run_keys.clear()
        self.last_seq.clear()
        self.agents.clear()

    def run_key(self, conn: sqlite3.Connection, run_id: str) -> int:
        key = self.run_keys.get(run_id)
        if key is None:
            row = conn.execute("SELECT run_key FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise InvalidRecords(f"unknown run '{run_id}'")
            key = self.run_keys[run_id] = row[0]
        return key

    def note_agents(self, conn: sqlite3.Connection, run_key: int, agents: set[str]) -> None:
        new = [(run_key, a) for a in agents if (run_key, a) not in self.agents]
        if new:
            conn.executemany("INSERT OR IGNORE INTO agents VALUES (?, ?)", new)
            self.agents.update(new)

    def _last(self, conn: sqlite3.Connection, run_key: int, kind: str) -> int:
        last = self.last_seq.get((run_key, kind))
        if last is None:
            low, high = run_key << SEQ_BITS, (run_key << SEQ_BITS) | SEQ_MASK
            top = conn.execute(f"SELECT max(id) FROM {kind} WHERE id > ? AND id <= ?", (low, high)).fetchone()[0]
            last = self.last_seq[(run_key, kind)] = (top & SEQ_MASK) if top is not None else 0
        return last

    def insert(self, conn: sqlite3.Connection, run_key: int, kind: str,
               values: list[tuple]) -> tuple[list[int] | None, int]:
        """Store the rows of ``kind`` whose natural key is new; return their positions (None:
        all of them) and the first seq given to them. Fast path: insert everything and let the
        unique index object; only when it does (a retry or replay) look each key up and insert
        the new ones."""
        spec = _SPECS[kind]
        first_seq = self._last(conn, run_key, kind) + 1
        conn.execute("SAVEPOINT batch")
        try:
            conn.executemany(spec.insert_sql, _numbered(run_key, first_seq, values))
            keep = None
            stored = len(values)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO batch")
            keep = self._new_only(conn, run_key, spec, values)
            stored = len(keep)
            if keep:
                conn.executemany(spec.insert_sql, _numbered(run_key, first_seq, [values[i] for i in keep]))
        conn.execute("RELEASE batch")
        self.last_seq[(run_key, kind)] = first_seq + stored - 1
        return keep, first_seq

    @staticmethod
    def _new_only(conn: sqlite3.Connection, run_key: int, spec: _KindSpec, values: Sequence[tuple]) -> list[int]:
        """Positions of the rows whose key is neither stored nor repeated earlier in ``values``."""
        seen: set[tuple] = set()
        keep = []
        length = spec.key_length
        for i, v in enumerate(values):
            key = v[:length]
            if key in seen:
                continue
            seen.add(key)
            if conn.execute(spec.exists_sql, (run_key, *key)).fetchone() is None:
                keep.append(i)
        return keep


def _numbered(run_key: int, first_seq: int, values: list[tuple]) -> Iterator[tuple]:
    """Rows with (id, run_key, seq_id) prepended, seqs consecutive from ``first_seq``."""
    base = (run_key << SEQ_BITS) + first_seq
    return ((base + i, run_key, first_seq + i) + v for i, v in enumerate(values))


_STOP = object()
#: How often the checkpointer copies the WAL back into the database file.
CHECKPOINT_INTERVAL_S = 0.5
#: WAL pages past which the writer checkpoints itself (only if the checkpointer fell behind).
WRITER_CHECKPOINT_PAGES = 16384


class _Checkpointer:
    """Copies the WAL back into the database file from its own thread and connection, so
    commits never wait for a checkpoint. (SQLite's automatic checkpoint runs inside the COMMIT
    that takes the WAL past 1,000 pages, with its writes and fsyncs: a 10-25 ms stall of the
    writer every second or two at 10,000 steps/s.) PASSIVE: it never blocks the writer or
    readers; the writer restarts the WAL at its next transaction once it is all copied."""

    def __init__(self, path: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._conn = _connect(path, create=False)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-store-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:   # the writer's own checkpoint still bounds the WAL
                    log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
        finally:
            self._conn.close()

    def stop(self) -> None:
        """Stop and close the connection (after the writer's last commit)."""
        self._stop.set()
        self._thread.join()


class StoreWriter:
    """The store's single writer thread, driven from one asyncio event loop.

    ``submit_*`` never blocks: it queues a job and returns a future resolved on the loop after
    the job's transaction committed (or failed). Whatever is queued when the thread wakes is
    coalesced into one transaction of at most ``max_records_per_transaction`` records; each
    job runs in its own savepoint so one bad job fails alone. ``wait_for_room()`` is the
    backpressure point for publishers: it waits while more than ``max_pending_records`` are
    queued, so a flood slows the senders (HTTP/2 flow control) instead of growing memory.
    """

    def __init__(self, path: str | Path, *, max_records_per_transaction: int = 8192,
                 max_pending_records: int = 65536) -> None:
        self.path = str(path)
        self.max_records_per_transaction = max_records_per_transaction
        self.max_pending_records = max_pending_records
        self.transactions = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending_records = 0
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future | None = None
        self._closing = False

    def start(self) -> None:
        """Open the writer connection and start the thread (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._room.set()
        self._done = self._loop.create_future()
        conn = _connect(self.path, create=False)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        self._checkpointer = _Checkpointer(self.path)
        self._thread = threading.Thread(target=self._run, args=(conn,), name="telemetry-store-writer", daemon=True)
        self._thread.start()

    # -- loop side -------------------------------------------------------------------------

    def _enqueue(self, job: _Job) -> asyncio.Future:
        if self._closing or self._loop is None:
            raise RuntimeError("the store writer is closed")
        self._pending_records += job.size
        if self._pending_records > self.max_pending_records:
            self._room.clear()
        self._queue.put(job)
        return job.future

    def submit_ingest(self, run_id: str, steps: Sequence[Any] = (), episodes: Sequence[Any] = (),
                      messages: Sequence[Any] = (), *,
                      step_columns: Sequence[Any] = (), episode_columns: Sequence[Any] = (),
                      on_commit: Callable[[IngestResult], None] | None = None) -> "asyncio.Future[IngestResult]":
        """Queue records of one run (protobuf RunStep / RunEpisode / CoordinationMessage, and
        StepColumns / EpisodeColumns blocks, stored after the messages of their kind) for storage (a record's run_id may
        be empty, meaning ``run_id``); the caller must not change them afterwards.
        ``on_commit(result)`` runs on the loop after COMMIT, before the future resolves.
        Records naming another run, or column blocks that do not line up, fail the job with
        ``InvalidRecords``."""
        try:
            job = _IngestJob(run_id, steps, episodes, messages, self._loop.create_future(), on_commit,
                             step_columns, episode_columns)
        except InvalidRecords as exc:
            failed = self._loop.create_future()
            failed.set_exception(exc)
            return failed
        return self._enqueue(job)

    async def ingest(self, run_id: str, steps: Sequence[Any] = (), episodes: Sequence[Any] = (),
                     messages: Sequence[Any] = ()) -> IngestResult:
        """Store records and wait until they are committed."""
        await self.wait_for_room()
        return await self.submit_ingest(run_id, steps, episodes, messages)

    def submit_run(self, row: RunRow, *, announce: bool = True,
                   on_commit: Callable[[RunRow], None] | None = None) -> "asyncio.Future[RunRow]":
        """Insert or update a run row; ``announce``: also append it to the run-change log
        under its (new) seq_id."""
        return self._enqueue(_SaveRunJob(row, announce, self._loop.create_future(), on_commit))

    def submit_session(self, row: SessionRow) -> "asyncio.Future[SessionRow]":
        """Store an issued session token's digest."""
        return self._enqueue(_SaveSessionJob(row, self._loop.create_future()))

    async def wait_for_room(self) -> None:
        """Return when the writer's queue is below its bound."""
        if self._pending_records > self.max_pending_records:
            await self._room.wait()

    @property
    def pending_records(self) -> int:
        """Records queued or in a transaction not yet committed."""
        return self._pending_records

    async def close(self) -> None:
        """Commit everything already queued, then stop the thread and close the connection."""
        if self._closing or self._loop is None:
            return
        self._closing = True
        self._queue.put(_STOP)
        await self._done

    def _deliver(self, jobs: list[_Job], results: list[Any]) -> None:
        """Back on the loop: publish committed results and resolve the futures, in job order."""
        for job, result in zip(jobs, results):
            self._pending_records -= job.size
            if isinstance(result, BaseException):
                if not job.future.done():
                    job.future.set_exception(result)
                continue
            if job.on_commit is not None:
                try:
                    job.on_commit(result)
                except Exception:
                    log.exception("post-commit hook failed for run %s", getattr(result, "run_id", "?"))
            if not job.future.done():
                job.future.set_result(result)
        if self._pending_records <= self.max_pending_records:
            self._room.set()

    # -- writer thread ---------------------------------------------------------------------

    def _run(self, conn: sqlite3.Connection) -> None:
        state = _WriterThreadState()
        stopping = False
        try:
            while not stopping:
                job = self._queue.get()
                if job is _STOP:
                    break
                jobs = [job]
                size = job.size
                while size < self.max_records_per_transaction:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                        break
                    jobs.append(more)
                    size += more.size
                results = self._transaction(conn, state, jobs)
                self._loop.call_soon_threadsafe(self._deliver, jobs, results)
        finally:
            conn.close()
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        self._checkpointer.stop()
        if not self._done.done():
            self._done.set_result(None)

    def _transaction(self, conn: sqlite3.Connection, state: _WriterThreadState, jobs: list[_Job]) -> list[Any]:
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            state.forget()
            return [StoreError(f"cannot start a transaction on {self.path}: {exc}")] * len(jobs)
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                results.append(job.apply(state, conn))
                conn.execute("RELEASE job")
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                state.forget()
                results.append(exc if isinstance(exc, (InvalidRecords, StoreError))
                               else StoreError(f"store write failed: {exc}"))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            state.forget()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [StoreError(f"commit to {self.path} failed: {exc}")] * len(jobs)
        self.transactions += 1
        return results

