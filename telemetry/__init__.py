"""Telemetry: the MOSAIC/1.0 daemon, its store, and the async gRPC proxy agents stream through."""

from telemetry.proxy import TelemetryGrpcProxy

__all__ = ["TelemetryGrpcProxy"]
