"""A local, wire-compatible Amazon Bedrock batch inference service for tests, demos and offline development.

Start it with ``python -m bedrock_batch.emulator`` or ``LocalStack``; the library never imports this package.
"""

from bedrock_batch.emulator.faults import FaultConfig
from bedrock_batch.emulator.jobs import ServiceLimits, ServiceTimings
from bedrock_batch.emulator.server import BedrockEmulator, EmulatorServer
from bedrock_batch.emulator.stack import EmulatorAdmin, EmulatorAdminError, LocalStack

__all__ = [
    "BedrockEmulator",
    "EmulatorAdmin",
    "EmulatorAdminError",
    "EmulatorServer",
    "FaultConfig",
    "LocalStack",
    "ServiceLimits",
    "ServiceTimings",
]
