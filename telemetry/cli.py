"""``python -m telemetry``: look at what the daemon holds.

    runs     list runs with their status (through the daemon; --db reads the file
             directly and adds record counts)
    tail     follow a run live: its steps and episodes, per agent, replayed from --since
    export   write a run's steps/episodes/messages to CSV or JSONL (reads the --db file
             directly; the daemon may be running)
    control  pause / resume / grant credits / cap the rate of a run's producers

Errors are one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from telemetry.auth import bearer_metadata
from telemetry.daemon import DEFAULT_DB, DEFAULT_LISTEN, OPERATOR_KIND, OPERATOR_TOKEN_ENV, PROTO_VERSION
from telemetry.export import EXPORT_FORMATS, EXPORT_KINDS, ExportError, export_run
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.runs import RunStatus, describe_control
from telemetry.store import StoreError, TelemetryStore

PROG = "python -m telemetry"
#: Where the telemetry commands read a protected run's secret when --secret is not given.
RUN_SECRET_ENV = "MOSAIC_RUN_SECRET"
CONTROL_ACK_TIMEOUT_S = 10.0


#: A stored record comes back whole, up to the daemon's --max-message-bytes (16 MiB by
#: default, and the operator's choice): the commands take whatever size the daemon sends
#: rather than gRPC's default 4 MiB, so a large observation never stops `tail` at that record.
READER_OPTIONS = (("grpc.max_receive_message_length", -1),)


class CliError(Exception):
    """A failure to report as one line and exit 1."""


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    if args.root_cert:
        try:
            with open(args.root_cert, "rb") as handle:
                roots = handle.read()
        except OSError as exc:
            raise CliError(f"cannot read --root-cert {args.root_cert}: {exc.strerror}") from None
        return grpc.aio.secure_channel(args.target, grpc.ssl_channel_credentials(roots), options=READER_OPTIONS)
    return grpc.aio.insecure_channel(args.target, options=READER_OPTIONS)


def _rpc_error(exc: grpc.aio.AioRpcError, target: str) -> CliError:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the telemetry daemon at {target} "
                        f"(start it with `python -m telemetry.daemon`, or pass --target)")
    return CliError(f"{exc.code().name.lower()}: {exc.details()}")


def _when(ts: Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds))


def _when_ns(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9)) if ns else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)


# -- runs -------------------------------------------------------------------------------

async def _runs(args: argparse.Namespace) -> int:
    statuses = [RunStatus[s].value for s in args.status or ()]
    if args.db:
        store = _open_store(args.db)
        try:
            rows = []
            for run in store.list_runs():
                if statuses and run.status not in statuses:
                    continue
                counts = store.counts(run.run_id)
                rows.append([run.run_id, RunStatus(run.status).name, _when_ns(run.created_at_ns),
                             _when_ns(run.updated_at_ns), str(len(store.agent_ids(run.run_id))), str(counts.steps),
                             str(counts.episodes),
                             _reasons(run.failure_reason, describe_control(run.status, json.loads(run.control_json or "{}")))])
        finally:
            store.close()
        header = ["RUN_ID", "STATUS", "CREATED", "UPDATED", "AGENTS", "STEPS", "EPISODES", "REASON"]
    else:
        async with _channel(args) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            try:
                response = await stub.ListRuns(pb.ListRunsRequest(status_filter=statuses), timeout=10)
            except grpc.aio.AioRpcError as exc:
                raise _rpc_error(exc, args.target) from None
        rows = [[r.run_id, RunStatus(r.status).name, _when(r.created_at), _when(r.updated_at),
                 _when(r.last_heartbeat),
                 _reasons(r.failure_reason, r.control_hold)] for r in response.runs]
        header = ["RUN_ID", "STATUS", "CREATED", "UPDATED", "HEARTBEAT", "REASON"]
    if not rows:
        print("no runs" + (f" with status {', '.join(args.status)}" if args.status else ""))
        return 0
    print(_table(header, rows))
    return 0


# -- tail -------------------------------------------------------------------------------

def _step_line(s: pb.RunStep) -> str:
    end = " terminated" if s.terminated else " truncated" if s.truncated else ""
    return (f"step     #{s.seq_id:<8} agent={s.agent_id or '-':<12} ep={s.episode_index:<5} t={s.step_index:<5} "
            f"action={s.action_json or '-':<6} reward={s.reward:+.3f}{end}")


def _episode_line(e: pb.RunEpisode) -> str:
    end = "terminated" if e.terminated else "truncated" if e.truncated else "ended"
    return (f"episode  #{e.seq_id:<8} agent={e.agent_id or '-':<12} ep={e.episode_index:<5} "
            f"return={e.total_reward:+.3f} steps={e.steps} {end}")


async def _records(call: grpc.aio.UnaryStreamCall) -> AsyncIterator:
    """The messages of a server stream; the call is cancelled when the consumer stops."""
    try:
        async for record in call:
            yield record
    finally:
        call.cancel()


async def _steps(stub: trainer_pb2_grpc.TrainerServiceStub, request: pb.StreamStepsRequest) -> AsyncIterator[pb.RunStep]:
    """A run's steps, many per message (StreamRunStepBatches, which keeps up with a fast run);
    one per message (StreamRunSteps) from a daemon without that extension, such as the
    reference MOSAIC/1.0 daemon, which answers UNIMPLEMENTED."""
    answered = False
    try:
        async with contextlib.aclosing(_records(stub.StreamRunStepBatches(request))) as batches:
            async for batch in batches:
                answered = True
                for step in batch.steps:
                    yield step
            return
    except grpc.aio.AioRpcError as exc:
        if answered or exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
    async with contextlib.aclosing(_records(stub.StreamRunSteps(request))) as steps:
        async for step in steps:
            yield step


async def _print_lines(records: AsyncIterator, line: Callable[[Any], str], *, agent: str | None = None,
                       printed: dict[str, int] | None = None, kind: str = "") -> None:
    """Print each record as ``line`` formats it, as it arrives (only ``agent``'s when given);
    ``printed[kind]`` follows the last seq_id read."""
    async with contextlib.aclosing(records):
        async for record in records:
            if printed is not None:
                printed[kind] = record.seq_id
            if agent is None or record.agent_id == agent:
                print(line(record), flush=True)


async def _run_end(stub: trainer_pb2_grpc.TrainerServiceStub, run_id: str) -> pb.RunRecord | None:
    """The first record of ``run_id`` in a finished state (TERM or FAULT), with its counts;
    None from a daemon that cannot say (no WatchRuns), which is then followed for ever."""
    try:
        async with contextlib.aclosing(_records(stub.WatchRuns(pb.WatchRunsRequest(
                status_filter=[RunStatus.TERM.value, RunStatus.FAULT.value])))) as changes:
            async for change in changes:
                if change.run_id == run_id:
                    return change
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        print(f"{PROG} tail: this daemon cannot tell when run {run_id} ends (no WatchRuns); following it "
              "until Ctrl-C", file=sys.stderr)
        return None
    raise CliError(f"the daemon stopped watching run {run_id} before it finished")


async def _tail(args: argparse.Namespace) -> int:
    """Print a run's records as they arrive. Without --follow, end once the run is TERM or
    FAULT and everything it held then is printed, with a line saying how it ended."""
    follow = args.follow
    # Ending needs every seq_id seen, so without --follow the agent filter is applied here.
    server_agent = (args.agent or "") if follow else ""
    local_agent = None if follow else args.agent
    printed = {"steps": args.since, "episodes": args.episodes_since}
    async with _channel(args) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        printers: dict[str, asyncio.Task] = {}
        end: pb.RunRecord | None = None
        try:
            async with asyncio.TaskGroup() as group:
                if args.kind in ("steps", "both"):
                    printers["steps"] = group.create_task(_print_lines(_steps(stub, pb.StreamStepsRequest(
                        run_id=args.run_id, since_seq=args.since, agent_id=server_agent)), _step_line,
                        agent=local_agent, printed=printed, kind="steps"))
                if args.kind in ("episodes", "both"):
                    printers["episodes"] = group.create_task(_print_lines(_records(stub.StreamRunEpisodes(
                        pb.StreamEpisodesRequest(run_id=args.run_id, since_seq=args.episodes_since,
                                                 agent_id=server_agent))),
                        _episode_line, agent=local_agent, printed=printed, kind="episodes"))
                if not follow and (end := await _run_end(stub, args.run_id)) is not None:
                    totals = {"steps": end.step_count, "episodes": end.episode_count}
                    while printers:
                        for kind in [k for k, task in printers.items() if printed[k] >= totals[k] or task.done()]:
                            printers.pop(kind).cancel()
                        if printers:
                            await asyncio.wait(printers.values(), timeout=0.05)
        except* grpc.aio.AioRpcError as group_error:
            raise _rpc_error(group_error.exceptions[0], args.target) from None
    if end is not None:
        reason = f" ({end.failure_reason})" if end.HasField("failure_reason") else ""
        print(f"run {args.run_id} ended {RunStatus(end.status).name}{reason}: {end.step_count} steps, "
              f"{end.episode_count} episodes", flush=True)
    return 0


# -- export -----------------------------------------------------------------------------

def _open_store(path: str) -> TelemetryStore:
    try:
        return TelemetryStore(path, create=False)
    except StoreError as exc:
        raise CliError(f"{exc} (pass the daemon's --db file with --db)") from None


async def _export(args: argparse.Namespace) -> int:
    store = _open_store(args.db)
    try:
        written = export_run(store, args.run_id, args.format, args.out, kind=args.kind, agent_id=args.agent)
    except ExportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    finally:
        store.close()
    if args.out != "-":
        print(f"wrote {written} {args.kind} of run {args.run_id} to {args.out}", file=sys.stderr)
    return 0


def _reasons(failure_reason: str, control_hold: str) -> str:
    """The REASON column: why the run failed or was cancelled, and what control holds it to."""
    return "; ".join(filter(None, [failure_reason, control_hold and f"held: {control_hold}"]))


# -- control ----------------------------------------------------------------------------

def _control_event(args: argparse.Namespace) -> tuple[pb.ControlEvent, str]:
    event = pb.ControlEvent(run_id=args.run_id, agent_id=args.agent or "")
    if args.pause:
        event.pause = True
        what = "pause"
    elif args.resume:
        event.resume = True
        what = "resume"
    elif args.grant is not None:
        event.grant_steps = args.grant
        what = f"grant of {args.grant} steps"
    elif args.unlimited:
        event.unlimited_steps = True
        what = "end of step credits (unlimited steps)"
    else:
        event.max_rate_hz = args.rate
        what = f"rate cap of {args.rate} Hz" if args.rate else "removal of the rate cap"
    return event, what


async def _control(args: argparse.Namespace) -> int:
    event, what = _control_event(args)
    async with _channel(args) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        try:
            operator = os.environ.get(OPERATOR_TOKEN_ENV, "")
            registered = await stub.RegisterWorker(pb.RegisterWorkerRequest(
                run_id=args.run_id, worker_id="telemetry-cli", worker_kind=OPERATOR_KIND,
                proto_version=PROTO_VERSION, run_secret=args.secret or os.environ.get(RUN_SECRET_ENV, "")),
                metadata=bearer_metadata(operator) if operator else None, timeout=10)
            call = stub.ControlStream(metadata=bearer_metadata(registered.session_token))
            await call.write(event)
            await call.done_writing()
            ack = await asyncio.wait_for(call.read(), CONTROL_ACK_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc, args.target) from None
        except asyncio.TimeoutError:
            raise CliError(f"the daemon did not acknowledge the {what} within {CONTROL_ACK_TIMEOUT_S:g} s") from None
    if ack is grpc.aio.EOF:
        raise CliError(f"the daemon closed the control stream without applying the {what}")
    target = f" for agent {args.agent}" if args.agent else ""
    print(f"run {args.run_id}: {what}{target} applied")
    return 0


# -- entry point ------------------------------------------------------------------------

def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got '{text}'")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Arguments(prog=PROG, description="Look at what the telemetry daemon holds.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Arguments)

    def daemon_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default=DEFAULT_LISTEN, help=f"daemon address (default {DEFAULT_LISTEN})")
        p.add_argument("--root-cert", help="PEM root certificate: talk TLS to the daemon")

    runs = commands.add_parser("runs", help="list runs with their status")
    daemon_options(runs)
    runs.add_argument("--status", action="append", type=str.upper,
                      choices=[s.name for s in RunStatus if s is not RunStatus.UNSPECIFIED],
                      help="only runs in this status (repeatable)")
    runs.add_argument("--db", help="read this store file directly instead of asking the daemon (adds counts)")
    runs.set_defaults(handler=_runs)

    tail = commands.add_parser("tail", help="follow a run's steps and episodes live")
    tail.add_argument("run_id")
    daemon_options(tail)
    tail.add_argument("--agent", help="only this agent's records")
    tail.add_argument("--since", type=_non_negative, default=0, metavar="N",
                      help="start after step seq N (default 0: the whole run, then live)")
    tail.add_argument("--episodes-since", type=_non_negative, default=0, metavar="N",
                      help="start after episode seq N (default 0; episodes have their own seq)")
    tail.add_argument("--kind", choices=["steps", "episodes", "both"], default="both")
    tail.add_argument("--follow", action="store_true",
                      help="keep following after the run ends (e.g. records a spool replays later); "
                           "default: exit 0 once the run is TERM or FAULT and everything it held is printed")
    tail.set_defaults(handler=_tail)

    export = commands.add_parser("export", help="write a run to CSV or JSONL (reads the store file)")
    export.add_argument("run_id")
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--out", required=True, help="output file ('-' for stdout)")
    export.add_argument("--kind", choices=EXPORT_KINDS, default="steps", help="default steps")
    export.add_argument("--agent", help="only this agent's records")
    export.add_argument("--db", default=DEFAULT_DB, help=f"the daemon's store file (default {DEFAULT_DB})")
    export.set_defaults(handler=_export)

    control = commands.add_parser(
        "control", help="pause, resume, grant steps or cap the rate of a run",
        description="Hold a run's agents back, or let them go. Each hold has its inverse: --pause / "
                    "--resume; --grant N / --unlimited; --rate HZ / --rate 0. What holds a run shows in "
                    "`runs` (REASON) and on the dashboard.")
    control.add_argument("run_id")
    daemon_options(control)
    action = control.add_mutually_exclusive_group(required=True)
    action.add_argument("--pause", action="store_true", help="stop taking steps until --resume")
    action.add_argument("--resume", action="store_true",
                        help="lift a pause (run-wide: every pause; with --agent: that agent's own)")
    action.add_argument("--grant", type=_non_negative, metavar="N",
                        help="credit mode: allow N more steps (they add up), then wait for more; --unlimited ends it")
    action.add_argument("--unlimited", action="store_true",
                        help="end credit mode: steps are no longer counted (credits left are dropped)")
    action.add_argument("--rate", type=_non_negative, metavar="HZ", help="cap steps per second per agent (0: remove the cap)")
    control.add_argument("--agent", help="only this agent (default: every agent of the run)")
    control.add_argument("--secret", help=f"the run's secret, for a protected run (default: ${RUN_SECRET_ENV}); "
                                          f"${OPERATOR_TOKEN_ENV}, when set, is sent as the daemon's operator token")
    control.set_defaults(handler=_control)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(args.handler(args))
    except CliError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 0
