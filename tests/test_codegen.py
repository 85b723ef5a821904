"""The committed generated gRPC code must match what `make proto` produces now."""
from pathlib import Path

from telemetry import codegen


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    fresh = codegen.generate(tmp_path / "generated")
    committed_dir = codegen.PROJECT_ROOT / "telemetry" / "generated"
    stale = [p.name for p in fresh if (committed_dir / p.name).read_text() != p.read_text()]
    assert not stale, f"telemetry/generated is stale ({', '.join(stale)}): run `make proto` and commit"


def test_generated_package_keeps_mosaic_contract() -> None:
    from telemetry.generated import trainer_pb2

    service = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"]
    assert trainer_pb2.DESCRIPTOR.package == "gymgui.trainer"
    for rpc in ("SubmitRun", "RegisterWorker", "PublishRunSteps", "StreamRunSteps", "ControlStream"):
        assert rpc in service.methods_by_name
    step = trainer_pb2.RunStep.DESCRIPTOR.fields_by_name
    assert step["agent_id"].number == 13 and step["worker_id"].number == 19
    assert trainer_pb2.ControlEvent.DESCRIPTOR.fields_by_name["max_rate_hz"].number == 13
