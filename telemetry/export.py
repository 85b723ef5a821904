"""Export a run's records from the store to CSV or JSONL, in store (seq) order.

Columns / keys are the stored row's fields (``telemetry.store.StepRow``, ``EpisodeRow``,
``MessageRow``): ``seq_id`` first, timestamps as integer nanoseconds since the epoch
(``timestamp_ns``, 0 when the producer sent none). The export reads the SQLite file
directly (WAL lets it run while the daemon writes), page by page, so memory stays flat
however long the run is; it holds what was committed when each page was read.

Non-finite rewards are exported as they were recorded: ``nan``, ``inf``, ``-inf`` in CSV
(Python's spelling, which ``float()`` and pandas read back), and the strings ``"nan"``,
``"inf"``, ``"-inf"`` in JSONL (JSON has no such numbers; bare NaN is not JSON).
"""
from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TextIO

from telemetry.store import EpisodeRow, MessageRow, StepRow, TelemetryStore

EXPORT_FORMATS = ("csv", "jsonl")
EXPORT_KINDS = ("steps", "episodes", "messages")
_ROW_TYPES = {"steps": StepRow, "episodes": EpisodeRow, "messages": MessageRow}
_PAGE = 5000


def _json_value(value: object) -> object:
    """``value`` as JSON can hold it: a non-finite float as its name ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class ExportError(ValueError):
    """The export cannot be done as asked (unknown run, format or kind)."""


def _rows(store: TelemetryStore, run_id: str, kind: str, agent_id: str | None) -> Iterator:
    read = {"steps": store.read_steps, "episodes": store.read_episodes, "messages": store.read_messages}[kind]
    after = 0
    while True:
        page = read(run_id, after, agent_id, _PAGE)
        if not page:
            return
        yield from page
        after = page[-1].seq_id


@contextmanager
def _opened(out: str | Path | TextIO | None) -> Iterator[TextIO]:
    if out is None or out == "-":
        yield sys.stdout
    elif isinstance(out, (str, Path)):
        with open(out, "w", newline="", encoding="utf-8") as handle:
            yield handle
    else:
        yield out


def export_run(store: TelemetryStore, run_id: str, fmt: str = "csv", out: str | Path | TextIO | None = None, *,
               kind: str = "steps", agent_id: str | None = None) -> int:
    """Write every ``kind`` record ("steps", "episodes" or "messages") of ``run_id`` to
    ``out`` (a path, an open text file, or None/"-" for stdout) as ``fmt`` ("csv" with a
    header row, or "jsonl": one JSON object per line); only ``agent_id``'s when given.
    Returns the number of records written. Raises ``ExportError`` for an unknown run,
    format or kind (before creating ``out``)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown format '{fmt}': choose one of {', '.join(EXPORT_FORMATS)}")
    if kind not in EXPORT_KINDS:
        raise ExportError(f"unknown kind '{kind}': choose one of {', '.join(EXPORT_KINDS)}")
    if store.get_run(run_id) is None:
        known = [r.run_id for r in store.list_runs()]
        hint = f"runs in {store.path}: {', '.join(known[:10])}" if known else f"{store.path} holds no runs"
        raise ExportError(f"no run '{run_id}' ({hint})")
    names = [f.name for f in fields(_ROW_TYPES[kind])]
    written = 0
    with _opened(out) as handle:
        if fmt == "csv":
            writer = csv.writer(handle)
            writer.writerow(names)
            for row in _rows(store, run_id, kind, agent_id):
                writer.writerow([getattr(row, n) for n in names])
                written += 1
        else:
            for row in _rows(store, run_id, kind, agent_id):
                handle.write(json.dumps({n: _json_value(getattr(row, n)) for n in names}, ensure_ascii=False,
                                        allow_nan=False))
                handle.write("\n")
                written += 1
    return written
