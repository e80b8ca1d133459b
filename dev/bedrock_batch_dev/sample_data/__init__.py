"""Synthetic sample data for tests and demos, in every source format the library reads.

Call-center transcripts: ``generate_calls(n, seed)`` makes them, ``write_calls(calls, fmt, destination)``
writes them. Product reviews (classification) and support tickets (extraction) work the same way with
``generate_reviews`` / ``write_reviews`` and ``generate_tickets`` / ``write_tickets``; each review and ticket
carries its ground truth in ``.truth``, which is never written.
"""

from bedrock_batch_dev.sample_data.calls import SCENARIOS, Call, Turn, generate_calls, make_call
from bedrock_batch_dev.sample_data.reviews import (
    ASPECTS,
    PRODUCT_CATEGORIES,
    REVIEW_LABELS,
    AspectMention,
    Review,
    ReviewTruth,
    generate_reviews,
    make_review,
)
from bedrock_batch_dev.sample_data.tickets import (
    CHANNELS,
    PRIORITIES,
    REQUESTED_ACTIONS,
    TICKET_CATEGORIES,
    Issue,
    Refund,
    Ticket,
    TicketTruth,
    generate_tickets,
    make_ticket,
)
from bedrock_batch_dev.sample_data.writers import (
    FORMATS,
    TABULAR_FORMATS,
    call_analytics_json,
    transcribe_json,
    write_calls,
    write_reviews,
    write_tickets,
)

__all__ = [
    "ASPECTS",
    "CHANNELS",
    "FORMATS",
    "PRIORITIES",
    "PRODUCT_CATEGORIES",
    "REQUESTED_ACTIONS",
    "REVIEW_LABELS",
    "SCENARIOS",
    "TABULAR_FORMATS",
    "TICKET_CATEGORIES",
    "AspectMention",
    "Call",
    "Issue",
    "Refund",
    "Review",
    "ReviewTruth",
    "Ticket",
    "TicketTruth",
    "Turn",
    "call_analytics_json",
    "generate_calls",
    "generate_reviews",
    "generate_tickets",
    "make_call",
    "make_review",
    "make_ticket",
    "transcribe_json",
    "write_calls",
    "write_reviews",
    "write_tickets",
]
