"""One Tan cell with every mover in a process of its own: the messages really cross the XMPP
server, where a cell's agents (one process) reach each other by SPADE's in-process dispatch.

`python -m agents.experiment.separate FILE --condition NAME --seed K --out DIR [--episodes N
--test-episodes M]` runs the condition's cell twice with the same seeds, once as the experiment
runner does (one process) and once with the world and its XMPP server in this process and each
agent in a spawned process of its own, and writes both cell results and `separate.json`: the
wall time of each, and whether the two played the same trials and sent the same messages (the
world is lockstep and every agent's randomness is seeded, so where the messages travel must not
change what happens). No telemetry in either run: this measures the transport.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import multiprocessing
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from agents.container import agent_jid
from agents.coordination.agent import CoordinatingAgent
from agents.coordination.ledger import KindCost
from agents.experiment.cell import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    CellTask,
    _agent_config,
    _agent_ids,
    _partner,
    _settings,
    message_costs,
    run_cell,
    world_agent,
)
from agents.experiment.spec import ExperimentError, load_experiment
from agents.records import RecordBuffer
from agents.telemetry_behaviour import DiscardSink, TelemetryBehaviour
from agents.xmpp_server import start_xmpp_server

AGENT_TIME_LIMIT_S = 3600.0


@dataclasses.dataclass(frozen=True)
class Costs:
    """A ledger's sent costs as a process hands them back (what `message_costs` reads)."""

    total: dict[str, KindCost]
    phase: dict[str, KindCost]

    def totals(self) -> Any:
        return dataclasses.make_dataclass("Totals", [("sent_cost_by_kind", dict)])(self.total)

    def phase_costs(self) -> dict[str, KindCost]:
        return self.phase


def _agent_process(task: CellTask, run_id: str, agent_id: str, jids: dict[str, str], port: int) -> dict[str, Any]:
    """In a spawned process: run one agent of the cell against the server at `port` (`jids`:
    every mover's and the world's, made once by the parent: a JID is unique per call)."""
    return asyncio.run(_run_agent(task, run_id, agent_id, jids, port))


async def _run_agent(task: CellTask, run_id: str, agent_id: str, jids: dict[str, str], port: int) -> dict[str, Any]:
    ids = _agent_ids(task)
    records = RecordBuffer()
    agent = CoordinatingAgent(
        jids[agent_id],
        secrets.token_urlsafe(12),
        _agent_config(task, run_id, agent_id, ids.index(agent_id)),
        peers={a: jids[a] for a in ids if a != agent_id},
        directory={jids[a]: a for a in ids},
        world_jid=jids["world"],
        partner=_partner(task, agent_id, ids),
        settings=_settings(task, agent_id),
        records=records,
        port=port,
        start_timeout=START_TIMEOUT_S,
        eval_episodes=0,
    )
    agent.ledger.phase_from = task.spec.episodes
    TelemetryBehaviour(records, DiscardSink()).attach(agent)  # drains the record buffer
    await agent.start()
    result = await agent.finished(AGENT_TIME_LIMIT_S)
    await agent.stop(timeout=STOP_TIMEOUT_S)
    if result.error is not None:
        raise RuntimeError(f"agent {agent_id} (run {run_id}): {result.error}")
    totals = agent.ledger.totals()
    return {
        "agent_id": agent_id,
        "steps": result.steps,
        "episodes": result.episodes,
        "sent_by_kind": totals.sent_by_kind,
        "total": {k: dataclasses.asdict(c) for k, c in totals.sent_cost_by_kind.items()},
        "phase": {k: dataclasses.asdict(c) for k, c in agent.ledger.phase_costs().items()},
    }


async def run_separated(task: CellTask) -> dict[str, Any]:
    """The cell with the world here and each agent in its own process; its measurements."""
    spec = task.spec
    run_id = f"{spec.name}.{task.condition.name}.seed{task.seed}.separate.{secrets.token_hex(3)}"
    started = time.monotonic()
    server = await start_xmpp_server(client_port=0, server_port=0)
    ids = _agent_ids(task)
    jids = {a: agent_jid(a, server.host) for a in [*ids, "world"]}
    try:
        world = world_agent(task, run_id, jids["world"], [jids[a] for a in ids], ids, server.client_port)
        await world.start()
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=len(ids), mp_context=context) as pool:
            rows = await asyncio.gather(
                *(loop.run_in_executor(pool, _agent_process, task, run_id, a, jids, server.client_port) for a in ids)
            )
        await world.stop()
    finally:
        await server.stop()
    ledgers = [Costs({k: KindCost(**c) for k, c in r["total"].items()}, {k: KindCost(**c) for k, c in r["phase"].items()}) for r in rows]
    ledgers.append(Costs(world.ledger.totals().sent_cost_by_kind, world.ledger.phase_costs()))
    return {
        "run_id": run_id,
        "elapsed_s": round(time.monotonic() - started, 3),
        "agents": [{k: r[k] for k in ("agent_id", "steps", "episodes", "sent_by_kind")} for r in rows],
        "trials": [[steps, int(captured)] for steps, captured in world.trials],
        "messages": message_costs(ledgers),
        "test_messages": message_costs(ledgers, test_phase=True),
    }


def _cell_in_process(task: CellTask) -> dict[str, Any]:
    return asyncio.run(run_cell(task, say=lambda message: None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.experiment.separate", description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--condition", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--episodes", type=int, help="training trials (default: the file's)")
    parser.add_argument("--test-episodes", type=int, help="test trials (default: the file's final_evaluation.episodes)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        spec = load_experiment(args.file)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    condition = next((c for c in spec.conditions if c.name == args.condition), None)
    if condition is None or not condition.tan:
        print(f"error: {args.file} has no tan condition named {args.condition!r}", file=sys.stderr)
        return 2
    spec = dataclasses.replace(
        spec,
        episodes=args.episodes or spec.episodes,
        final_eval_episodes=args.test_episodes or spec.final_eval_episodes,
    )
    task = CellTask(spec, condition, args.seed, None, None)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{condition.name} seed {args.seed}: one process ...", file=sys.stderr)
    context = multiprocessing.get_context("spawn")  # a cell's XMPP server and container are process-wide
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        together = pool.submit(_cell_in_process, task).result()
    print(f"{condition.name} seed {args.seed}: one process per agent ...", file=sys.stderr)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        apart = pool.submit(_separated_in_process, task).result()
    same_trials = together["tan"]["trials"] == apart["trials"]
    same_messages = together["tan"]["messages"] == apart["messages"]
    steps = sum(s for s, _ in apart["trials"])
    report = {
        "experiment": spec.name,
        "condition": condition.name,
        "seed": args.seed,
        "training_trials": spec.episodes,
        "test_trials": spec.final_eval_episodes,
        "world_steps": steps,
        "one_process_s": together["elapsed_s"],
        "separate_processes_s": apart["elapsed_s"],
        "one_process_steps_per_s": round(steps / together["elapsed_s"], 1),
        "separate_processes_steps_per_s": round(steps / apart["elapsed_s"], 1),
        "same_trials": same_trials,
        "same_messages": same_messages,
        "messages": apart["messages"],
    }
    (args.out / "one_process.json").write_text(json.dumps(together) + "\n", encoding="utf-8")
    (args.out / "separate_processes.json").write_text(json.dumps(apart) + "\n", encoding="utf-8")
    (args.out / "separate.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "messages"}, indent=2))
    return 0 if same_trials and same_messages else 1


def _separated_in_process(task: CellTask) -> dict[str, Any]:
    return asyncio.run(run_separated(task))


if __name__ == "__main__":
    sys.exit(main())
