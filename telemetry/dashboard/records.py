"""The JSON shapes the dashboard's pages read, built from store rows or live hub records.

Store reads give ``telemetry.store`` dataclasses (``timestamp_ns``); the live hub gives the
protobuf records as published (``timestamp``). Both carry the proto's field names, so one
converter per kind serves both. Shapes (all keys always present):

run      {"run_id", "status" ("EXEC"...), "failure_reason", "created_ms", "updated_ms",
          "steps", "episodes", "messages", "agents"}   (counts; "agents" is a number)
step     {"seq", "agent_id", "episode", "step", "action", "reward", "terminated", "truncated", "ts_ms"}
         ("reward" and "total_reward": a number, or "nan" / "inf" / "-inf")
episode  {"seq", "agent_id", "episode", "total_reward", "steps", "terminated", "truncated",
          "success" (true/false, or null when unknown), "ts_ms"}
message  {"seq", "agent_id", "index", "direction", "peer", "kind", "bytes", "episode", "ts_ms"}
replay step = step + {"observation", "render_hint"}
"""

from __future__ import annotations

import json
import math
from typing import Any

from telemetry.runs import RunStatus, describe_control
from telemetry.store import RecordCounts, RunRow


def parse_json(text: str) -> Any:
    """A JSON field's value; text that is not JSON is returned as it is (it is still worth
    showing). NaN and infinities become null: the browser's JSON cannot carry them."""
    if not text:
        return None
    try:
        return json.loads(text, parse_constant=lambda _: None)
    except ValueError:
        return text


def _number(value: float) -> float | str:
    """A reward as JSON can carry it: NaN and the infinities (an agent's own values, stored
    as they are) become "nan", "inf", "-inf", which the pages turn back into numbers."""
    return value if math.isfinite(value) else str(value)


def _ts_ms(record: Any) -> int:
    ns = getattr(record, "timestamp_ns", None)
    if ns is None:  # a protobuf record from the hub
        ns = record.timestamp.seconds * 1_000_000_000 + record.timestamp.nanos
    return ns // 1_000_000


def status_name(status: int) -> str:
    """The short RunStatus name ("EXEC") of a stored status number."""
    try:
        return RunStatus(status).name
    except ValueError:
        return "UNSPECIFIED"


def run_json(run: RunRow, counts: RecordCounts, agents: int) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": status_name(run.status),
        "failure_reason": run.failure_reason,
        "control_hold": describe_control(run.status, json.loads(run.control_json or "{}")),
        "created_ms": run.created_at_ns // 1_000_000,
        "updated_ms": run.updated_at_ns // 1_000_000,
        "steps": counts.steps,
        "episodes": counts.episodes,
        "messages": counts.messages,
        "agents": agents,
    }


def step_json(step: Any) -> dict[str, Any]:
    return {
        "seq": step.seq_id,
        "agent_id": step.agent_id,
        "episode": step.episode_index,
        "step": step.step_index,
        "action": parse_json(step.action_json),
        "reward": _number(step.reward),
        "terminated": step.terminated,
        "truncated": step.truncated,
        "ts_ms": _ts_ms(step),
    }


def replay_step_json(step: Any) -> dict[str, Any]:
    out = step_json(step)
    out["observation"] = parse_json(step.observation_json)
    out["render_hint"] = parse_json(step.render_hint_json)
    return out


def episode_success(metadata_json: str) -> bool | None:
    """Whether the episode reached its goal, as the agent reported it in metadata["success"].

    Only the agent knows (CliffWalking's returns are negative even on success, FrozenLake's
    holes also terminate), so an episode without that key counts as unknown, not failed.
    """
    metadata = parse_json(metadata_json)
    if isinstance(metadata, dict) and isinstance(metadata.get("success"), bool):
        return metadata["success"]
    return None


def episode_json(episode: Any) -> dict[str, Any]:
    return {
        "seq": episode.seq_id,
        "agent_id": episode.agent_id,
        "episode": episode.episode_index,
        "total_reward": _number(episode.total_reward),
        "steps": episode.steps,
        "terminated": episode.terminated,
        "truncated": episode.truncated,
        "success": episode_success(episode.metadata_json),
        "ts_ms": _ts_ms(episode),
    }


def message_json(message: Any) -> dict[str, Any]:
    return {
        "seq": message.seq_id,
        "agent_id": message.agent_id,
        "index": message.message_index,
        "direction": message.direction,
        "peer": message.peer,
        "kind": message.kind,
        "bytes": message.bytes,
        "episode": message.episode_index,
        "ts_ms": _ts_ms(message),
    }
