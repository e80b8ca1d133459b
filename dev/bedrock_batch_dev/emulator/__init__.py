"""A local, wire-compatible Amazon Bedrock batch inference service for tests, demos and offline development.

Start it with ``python -m bedrock_batch_dev.emulator`` or ``LocalStack``; the library never imports it.
"""

from bedrock_batch_dev.emulator.faults import FaultConfig
from bedrock_batch_dev.emulator.jobs import ServiceLimits, ServiceTimings
from bedrock_batch_dev.emulator.server import BedrockEmulator, EmulatorServer
from bedrock_batch_dev.emulator.stack import EmulatorAdmin, EmulatorAdminError, LocalStack

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
