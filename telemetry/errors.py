"""Errors the telemetry proxy raises to its users.

Each one says what was wrong and what to do about it, so an agent process can print the
message and exit non-zero instead of showing a traceback. A daemon that is merely down is
*not* an error: the proxy spools to disk and retries, so there is no exception for it.
"""
from __future__ import annotations


class TelemetryError(Exception):
    """Base class of every error the telemetry proxy raises on purpose."""


class NotADaemonError(TelemetryError):
    """The target answers, but it is not a MOSAIC/1.0 telemetry daemon.

    Raised for a server that does not speak gRPC at all (an HTTP/1 server, say) and for a
    gRPC server that has no `gymgui.trainer.TrainerService`. A closed port is not this error:
    it means the daemon is down, and the proxy spools and retries.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(
            f"{target} is not a MOSAIC/1.0 telemetry daemon ({reason}). "
            f"Start one with `python -m telemetry.daemon --listen {target}`, or point the "
            "proxy at the daemon's address (if the daemon uses TLS, pass tls=True)."
        )


class TokenRefusedError(TelemetryError):
    """The daemon refused the session token even after a fresh RegisterWorker handshake."""

    def __init__(self, target: str, run_id: str, detail: str) -> None:
        self.target = target
        self.run_id = run_id
        self.detail = detail
        super().__init__(
            f"the daemon at {target} refused the session token for run {run_id!r} even after "
            f"registering again ({detail}). Check that the run still accepts telemetry "
            "(it may have been cancelled) and that the proxy talks to the daemon that owns "
            "the run; the records stay in the spool and are replayed by a later session."
        )


class MessageTooLargeError(TelemetryError):
    """One record is larger than the largest message the proxy may send.

    Raised by `emit_*` at the moment the record is offered, so the caller learns which
    field is too big; the record is not accepted (it is never dropped silently).
    """

    def __init__(self, kind: str, field: str, field_bytes: int, record_bytes: int,
                 limit: int) -> None:
        self.kind = kind
        self.field = field
        self.field_bytes = field_bytes
        self.record_bytes = record_bytes
        self.limit = limit
        super().__init__(
            f"{kind} record is {record_bytes} bytes, over the {limit}-byte message limit; "
            f"its largest field is {field} ({field_bytes} bytes). Shrink {field} (for example "
            "store large observations elsewhere and send a reference) or raise "
            "max_message_bytes on TelemetryGrpcProxy and on the daemon."
        )


class ProtocolVersionError(TelemetryError):
    """The daemon accepted the handshake with a protocol version this proxy does not speak."""

    def __init__(self, target: str, offered: str, accepted: str) -> None:
        self.target = target
        self.offered = offered
        self.accepted = accepted
        super().__init__(
            f"the daemon at {target} answered RegisterWorker with protocol {accepted!r}, "
            f"but this proxy speaks {offered!r}; use a daemon that speaks {offered}."
        )


class RecordsRejectedError(TelemetryError):
    """The daemon refused a batch for a reason a retry cannot fix (not auth, not availability).

    The refused batch is kept on disk in `quarantine_path` so it is never silently lost.
    """

    def __init__(self, target: str, run_id: str, detail: str, quarantine_path: str) -> None:
        self.target = target
        self.run_id = run_id
        self.detail = detail
        self.quarantine_path = quarantine_path
        super().__init__(
            f"the daemon at {target} refused a telemetry batch of run {run_id!r} ({detail}); "
            f"the batch is kept in {quarantine_path} for inspection."
        )


class RecordOutOfRangeError(TelemetryError, ValueError):
    """`emit_*` was offered a record holding a number the daemon's store cannot hold.

    Raised where the record was made, so the caller sees the agent, episode, step and field;
    the record is not accepted (the daemon would refuse it).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}")


class SessionClosedError(TelemetryError):
    """A record was offered to a telemetry session after the session had exited."""

    def __init__(self) -> None:
        super().__init__("this telemetry session has exited; open a new one with "
                         "`proxy.session()` to emit more records")


class RunRefusedError(TelemetryError):
    """The daemon refused to register this worker for the run (e.g. the run was cancelled)."""

    def __init__(self, target: str, run_id: str, detail: str) -> None:
        self.target = target
        self.run_id = run_id
        self.detail = detail
        super().__init__(
            f"the daemon at {target} refused to register a worker for run {run_id!r} "
            f"({detail}); start a new run or check its state with `python -m telemetry runs`."
        )


class TlsHandshakeError(TelemetryError):
    """The TLS handshake with the target failed: a configuration problem, not an outage."""

    def __init__(self, target: str, detail: str) -> None:
        self.target = target
        self.detail = detail
        super().__init__(
            f"the TLS handshake with {target} failed ({detail}). If the daemon runs without "
            "TLS, drop tls=True; if its certificate comes from a private CA, pass "
            "root_certificates=<CA PEM file>; if the certificate names another host, pass "
            "tls_server_name=<that name>."
        )


class TlsRequiredError(TelemetryError):
    """The daemon speaks TLS and the proxy connected without it."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(
            f"the daemon at {target} uses TLS and closed this plaintext connection: pass tls=True "
            "to TelemetryGrpcProxy (and root_certificates=<CA PEM file> if its certificate comes "
            "from a private CA).")
