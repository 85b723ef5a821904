"""A bare MOSAIC/1.0 producer for load generation: records built and serialized before the
clock starts, then sent over the daemon's own RPCs.

The ingest figures measure the daemon, so the producer side must cost as little as possible:
records are serialized in advance and sent as bytes (no protobuf work while timing), through
the same calls the proxy makes (RegisterWorker for a token, then PublishTelemetryBatch calls
of a few batches each, or the per-record PublishRunSteps stream of MOSAIC/1.0).
"""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import grpc
import grpc.aio

from telemetry import columns
from telemetry.auth import PROTO_VERSION, bearer_metadata
from telemetry.generated import trainer_pb2 as pb

_SERVICE = "/gymgui.trainer.TrainerService/"
#: What a FrozenLake 4x4 agent attaches to the first step of each episode (agents.actions).
FROZEN_LAKE_HINT = json.dumps({"kind": "grid", "rows": 4, "cols": 4, "desc": ["SFFF", "FHFH", "FFFH", "HFFG"],
                               "legend": {"S": "start", "F": "frozen", "H": "hole", "G": "goal"},
                               "state": "row * cols + col"})
#: Records per TelemetryBatch and batches per call: the proxy's defaults (batch_max_records,
#: _CALL_MAX_BATCHES), so the daemon sees the traffic real agents send.
BATCH_RECORDS = 2000
BATCHES_PER_CALL = 8
STEPS_PER_EPISODE = 50
#: Steps per `emit_steps` call of a busy agent's telemetry behaviour: about what an agent at
#: 40,000 steps/s hands over per drain (agents.telemetry_behaviour drains every 50 ms).
SINK_CHUNK = 2000


def step(run_id: str, agent_id: str, number: int, *, timestamp_ns: int | None = None) -> pb.RunStep:
    """The ``number``-th step of an agent, shaped like a FrozenLake agent's step record."""
    ts = time.time_ns() if timestamp_ns is None else timestamp_ns
    return pb.RunStep(
        run_id=run_id, agent_id=agent_id, episode_index=number // STEPS_PER_EPISODE,
        step_index=number % STEPS_PER_EPISODE, action_json=str(number % 4), observation_json=str(number % 16),
        reward=1.0 if number % STEPS_PER_EPISODE == STEPS_PER_EPISODE - 1 else 0.0,
        terminated=number % STEPS_PER_EPISODE == STEPS_PER_EPISODE - 1, truncated=False,
        timestamp={"seconds": ts // 1_000_000_000, "nanos": ts % 1_000_000_000},
        policy_label="explore" if number % 3 else "greedy", backend="spade-bdi",
        render_hint_json=FROZEN_LAKE_HINT if number % STEPS_PER_EPISODE == 0 else "", payload_version=1,
        worker_id=f"bench-{agent_id}")


def serialized_steps(run_id: str, agent_id: str, count: int, first: int = 0) -> list[bytes]:
    """``count`` serialized RunStep messages of one agent, numbered from ``first``."""
    now = time.time_ns()
    return [step(run_id, agent_id, n, timestamp_ns=now).SerializeToString() for n in range(first, first + count)]


def batch_calls(run_id: str, steps: list[bytes]) -> list[list[bytes]]:
    """Serialized TelemetryBatch messages grouped into calls, as the proxy groups them."""
    batches = [pb.TelemetryBatch(run_id=run_id, steps=[pb.RunStep.FromString(s) for s in
                                                        steps[i:i + BATCH_RECORDS]]).SerializeToString()
               for i in range(0, len(steps), BATCH_RECORDS)]
    return [batches[i:i + BATCHES_PER_CALL] for i in range(0, len(batches), BATCHES_PER_CALL)]


def column_calls(run_id: str, steps: list[bytes]) -> list[list[bytes]]:
    """The same steps as the proxy sends what `emit_steps` took: StepColumns blocks of up to
    ``SINK_CHUNK`` steps of one agent (what an agent's telemetry behaviour hands over at a
    time), packed into batches of ``BATCH_RECORDS`` records, ``BATCHES_PER_CALL`` per call."""
    parsed = [pb.RunStep.FromString(s) for s in steps]
    blocks = []
    for first in range(0, len(parsed), SINK_CHUNK):
        chunk = parsed[first:first + SINK_CHUNK]
        for agent_id in dict.fromkeys(s.agent_id for s in chunk):
            mine = [_as_record(s) for s in chunk if s.agent_id == agent_id]
            blocks.extend(columns.encode_steps(agent_id, f"bench-{agent_id}", mine))
    per_batch = max(1, BATCH_RECORDS // SINK_CHUNK)
    batches = [pb.TelemetryBatch(run_id=run_id, step_columns=blocks[i:i + per_batch]).SerializeToString()
               for i in range(0, len(blocks), per_batch)]
    return [batches[i:i + BATCHES_PER_CALL] for i in range(0, len(batches), BATCHES_PER_CALL)]


def _as_record(s: pb.RunStep) -> SimpleNamespace:
    """A RunStep as the attributes `telemetry.columns.encode_steps` reads."""
    return SimpleNamespace(
        episode_index=s.episode_index, step_index=s.step_index, action_json=s.action_json,
        observation_json=s.observation_json, reward=s.reward, terminated=s.terminated, truncated=s.truncated,
        timestamp_ns=s.timestamp.seconds * 1_000_000_000 + s.timestamp.nanos, policy_label=s.policy_label,
        backend=s.backend, payload_version=s.payload_version, render_hint_json=s.render_hint_json or None,
        episode_seed=None)


class Producer:
    """One registered producer session: its own channel, worker_id and session token."""

    def __init__(self, address: str, run_id: str, worker_id: str) -> None:
        self.run_id = run_id
        self.worker_id = worker_id
        self._channel = grpc.aio.insecure_channel(address)
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._batch = self._channel.stream_unary(_SERVICE + "PublishTelemetryBatch",
                                                 response_deserializer=pb.PublishTelemetryResponse.FromString)
        self._steps = self._channel.stream_unary(_SERVICE + "PublishRunSteps",
                                                 response_deserializer=pb.PublishTelemetryResponse.FromString)

    async def register(self) -> None:
        """RegisterWorker: the token every publish call carries (creates the run if needed)."""
        response = await self._channel.unary_unary(
            _SERVICE + "RegisterWorker", request_serializer=pb.RegisterWorkerRequest.SerializeToString,
            response_deserializer=pb.RegisterWorkerResponse.FromString)(pb.RegisterWorkerRequest(
                run_id=self.run_id, worker_id=self.worker_id, worker_kind="bench", proto_version=PROTO_VERSION,
                schema_id="mosaic.telemetry", schema_version=1), timeout=10)
        self._metadata = bearer_metadata(response.session_token)

    async def publish_batches(self, calls: list[list[bytes]]) -> int:
        """Send the calls one after another (each answered once durable); records stored."""
        accepted = 0
        for payloads in calls:
            response = await self._batch(iter(payloads), metadata=self._metadata, timeout=600)
            accepted += response.accepted
        return accepted

    async def publish_steps(self, steps: list[bytes]) -> int:
        """The MOSAIC/1.0 per-record path: one RunStep per wire message, one stream; records stored."""
        response = await self._steps(iter(steps), metadata=self._metadata, timeout=600)
        return response.accepted

    async def close(self) -> None:
        """Close the producer's channel."""
        await self._channel.close()

