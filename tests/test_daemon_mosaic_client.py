"""A client generated from proto/trainer.proto alone, using only MOSAIC/1.0 methods, works.

The client is generated into tmp_path with grpc_tools.protoc (plain top-level modules, as a
user of the reference contract would have) and runs in its own process, so nothing of this
project is imported by it.
"""
import asyncio
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures_daemon import PROJECT_ROOT

CLIENT = textwrap.dedent('''
    import sys
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp
    import trainer_pb2 as pb
    import trainer_pb2_grpc as rpc

    target, run_id = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        stub = rpc.TrainerServiceStub(channel)
        assert stub.GetHealth(pb.HealthCheckRequest()).healthy
        submitted = stub.SubmitRun(pb.SubmitRunRequest(run_id=run_id, config_json='{"env_id": "FrozenLake-v1"}'))
        reg = stub.RegisterWorker(pb.RegisterWorkerRequest(
            run_id=run_id, worker_id="ref-worker", worker_kind="reference", proto_version="MOSAIC/1.0",
            schema_id="gym.step", schema_version=1, supports_pause=True))
        assert reg.accepted_version == "MOSAIC/1.0" and reg.session_token
        auth = (("authorization", "Bearer " + reg.session_token),)
        stamp = Timestamp(seconds=1_800_000_000, nanos=5)
        steps = [pb.RunStep(run_id=run_id, episode_index=0, step_index=i, action_json="1",
                            observation_json=str(i), reward=float(i == 4), terminated=(i == 4),
                            timestamp=stamp, agent_id="ref-agent", policy_label="greedy", backend="tabular")
                 for i in range(5)]
        published = stub.PublishRunSteps(iter(steps), metadata=auth)
        assert (published.accepted, published.dropped) == (5, 0), published
        episode = pb.RunEpisode(run_id=run_id, episode_index=0, total_reward=1.0, steps=5, terminated=True,
                                metadata_json="{}", timestamp=stamp, agent_id="ref-agent")
        assert stub.PublishRunEpisodes(iter([episode]), metadata=auth).accepted == 1
        stub.Heartbeat(pb.HeartbeatRequest(run_id=run_id))

        back = []
        for step in stub.StreamRunSteps(pb.StreamStepsRequest(run_id=run_id, since_seq=0)):
            back.append(step)
            if len(back) == 5:
                break
        assert [s.seq_id for s in back] == [1, 2, 3, 4, 5]
        assert [s.observation_json for s in back] == [str(i) for i in range(5)]
        assert back[4].terminated and back[0].timestamp == stamp and back[0].agent_id == "ref-agent"
        for ep in stub.StreamRunEpisodes(pb.StreamEpisodesRequest(run_id=run_id)):
            assert (ep.seq_id, ep.total_reward, ep.steps) == (1, 1.0, 5)
            break
        runs = stub.ListRuns(pb.ListRunsRequest(status_filter=[pb.RUN_STATUS_EXEC])).runs
        assert [(r.run_id, r.digest) for r in runs] == [(run_id, submitted.digest)]
        stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
        history = []
        for record in stub.WatchRuns(pb.WatchRunsRequest()):
            history.append(record.status)
            if record.status == pb.RUN_STATUS_TERM:
                break
        assert history == [pb.RUN_STATUS_INIT, pb.RUN_STATUS_RDY, pb.RUN_STATUS_EXEC, pb.RUN_STATUS_TERM]
    print("reference client ok")
''')


@pytest.mark.timeout(120)
async def test_client_generated_from_the_proto_alone(daemon, tmp_path: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    generated = tmp_path / "reference_client"
    generated.mkdir()
    shutil.copy(PROJECT_ROOT / "proto" / "trainer.proto", generated / "trainer.proto")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(["grpc_tools.protoc", f"-I{generated}", f"-I{well_known}", f"--python_out={generated}",
                        f"--grpc_python_out={generated}", str(generated / "trainer.proto")]) == 0
    (generated / "client.py").write_text(CLIENT)

    # A thread, not asyncio's subprocesses (those depend on the event-loop policy SPADE replaces).
    client = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-E", str(generated / "client.py"), daemon.address, "reference-run"],
        cwd=generated, capture_output=True, text=True, timeout=90)
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == "reference client ok"
