"""A live viewer in its own process: ``python -m bench.viewer ADDRESS RUN_ID COUNT TIMEOUT_S [STREAM]``.

Subscribes to the run's steps from seq 0 (as the CLI's tail and the dashboard do), on
StreamRunStepBatches (STREAM ``batches``, the default: many steps per message) or
StreamRunSteps (``steps``: one per message, MOSAIC/1.0), prints "ready" once the daemon
answered on the channel, then, for each of the next COUNT steps, the time from the step's own
timestamp (set by the producer when it emitted the step) to its arrival here. Prints one JSON
object and exits: ``latencies_us`` (in arrival order) and ``span_s``, the time from the first
arrival to the last (the rate the viewer was served at).

In a process of its own so that reading the stream neither slows the producer nor waits on
it: what is measured is the pipeline, proxy -> daemon -> viewer. Both processes read the same
machine clock (time.time_ns).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence

import grpc

from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc

STREAMS = ("batches", "steps")


def _open(stub: trainer_pb2_grpc.TrainerServiceStub, run_id: str, stream: str, timeout_s: float) -> grpc.Call:
    """Start the chosen stream of the run's steps from seq 0 (the call is under way on return)."""
    request = pb.StreamStepsRequest(run_id=run_id, since_seq=0)
    rpc = stub.StreamRunStepBatches if stream == "batches" else stub.StreamRunSteps
    return rpc(request, timeout=timeout_s)


def _arrivals(call: grpc.Call, stream: str) -> Iterator[tuple[int, Sequence[pb.RunStep]]]:
    """(arrival time in ns, the steps of that message) for each message of the call."""
    for message in call:
        yield time.time_ns(), (message.steps if stream == "batches" else (message,))


def watch(address: str, run_id: str, count: int, timeout_s: float, stream: str = "batches") -> tuple[list[int], float]:
    """Latencies in microseconds of the run's first ``count`` steps, and the seconds from the
    first arrival to the last."""
    with grpc.insecure_channel(address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        stub.GetHealth(pb.HealthCheckRequest(), timeout=10)
        call = _open(stub, run_id, stream, timeout_s)
        print("ready", flush=True)
        latencies: list[int] = []
        first = arrived = 0
        for arrived, steps in _arrivals(call, stream):
            first = first or arrived
            for step in steps:
                stamp = step.timestamp
                latencies.append((arrived - stamp.seconds * 1_000_000_000 - stamp.nanos) // 1000)
            if len(latencies) >= count:
                call.cancel()
                break
    return latencies[:count], (arrived - first) / 1e9


def main(argv: list[str]) -> int:
    address, run_id, count, timeout_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    stream = argv[4] if len(argv) > 4 else "batches"
    if stream not in STREAMS:
        print(f"viewer: unknown stream '{stream}' (choose from {', '.join(STREAMS)})", file=sys.stderr)
        return 2
    try:
        latencies, span_s = watch(address, run_id, count, timeout_s, stream)
    except grpc.RpcError as err:
        print(f"viewer: the stream of run {run_id} at {address} failed: {err.code().name}: {err.details()}",
              file=sys.stderr)
        return 1
    print(json.dumps({"latencies_us": latencies, "span_s": span_s}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
