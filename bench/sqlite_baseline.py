"""The physical limit of the daemon's design: raw batched SQLite inserts of the same steps.

The daemon stores every step as one row of the store's ``steps`` table (WAL,
``synchronous=NORMAL``, a unique index on the natural key) from one writer thread, a few
thousand rows per transaction. Here the same rows go into the same schema (created by
``telemetry.store.TelemetryStore`` itself) the same way, from tuples built before the clock
starts: no gRPC, no protobuf, no event loop. Nothing the daemon does can be faster than this.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from telemetry.generated import trainer_pb2 as pb
from telemetry.store import TelemetryStore

#: The store writer's transaction size (StoreWriter.max_records_per_transaction).
ROWS_PER_TRANSACTION = 8192
_RUN_KEY = 1
_SEQ_BITS = 40  # the store's row id is (run_key << 40) | seq_id: rows of a run in seq order


def _rows(steps: list[bytes], columns: list[str]) -> list[tuple]:
    """The table's rows for serialized RunSteps, column by column as the store lays them out."""
    rows = []
    for seq, data in enumerate(steps, start=1):
        message = pb.RunStep.FromString(data)
        values = {"id": (_RUN_KEY << _SEQ_BITS) | seq, "run_key": _RUN_KEY, "seq_id": seq,
                  "timestamp_ns": message.timestamp.seconds * 1_000_000_000 + message.timestamp.nanos}
        rows.append(tuple(values[c] if c in values else getattr(message, c) for c in columns))
    return rows


def raw_insert_rate(db_path: Path, steps: list[bytes]) -> float:
    """Rows per second inserting ``steps`` (serialized RunSteps, several agents interleaved as
    the daemon receives them) into a fresh store at ``db_path``, durable at each COMMIT."""
    TelemetryStore(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("INSERT INTO runs (run_key, run_id, status, created_at_ns, updated_at_ns, seq_id) "
                     "VALUES (?, 'bench', 4, 0, 0, 1)", (_RUN_KEY,))
        columns = [row[1] for row in conn.execute("PRAGMA table_info(steps)")]
        rows = _rows(steps, columns)
        insert = f"INSERT INTO steps ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        start = time.perf_counter()
        for first in range(0, len(rows), ROWS_PER_TRANSACTION):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows[first:first + ROWS_PER_TRANSACTION])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return len(rows) / elapsed
