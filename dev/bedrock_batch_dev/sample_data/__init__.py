"""Synthetic call-center transcripts for tests and demos, in every source format the library reads.

``generate_calls(n, seed)`` makes the calls, ``write_calls(calls, fmt, destination)`` writes them.
"""

from bedrock_batch_dev.sample_data.calls import SCENARIOS, Call, Turn, generate_calls, make_call
from bedrock_batch_dev.sample_data.writers import FORMATS, call_analytics_json, transcribe_json, write_calls

__all__ = [
    "FORMATS",
    "SCENARIOS",
    "Call",
    "Turn",
    "call_analytics_json",
    "generate_calls",
    "make_call",
    "transcribe_json",
    "write_calls",
]
