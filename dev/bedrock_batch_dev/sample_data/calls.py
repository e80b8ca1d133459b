"""Synthetic call-center calls: realistic Agent/Customer transcripts of five scenarios, deterministic by seed.

Call ``i`` of a seed is the same whatever ``n`` is, so a small sample is a prefix of a large one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from faker import Faker

Speaker = Literal["Agent", "Customer"]
SCENARIOS = ("billing", "technical_support", "cancellation", "complaint", "order_status")
QUEUES: Mapping[str, str] = {
    "billing": "billing",
    "technical_support": "tech-support",
    "cancellation": "retention",
    "complaint": "customer-care",
    "order_status": "orders",
}
MIN_BYTES = 1_024
MAX_BYTES = 20_480
_EPOCH = datetime(2025, 1, 6, tzinfo=UTC)


@dataclass(frozen=True)
class Turn:
    speaker: Speaker
    text: str


@dataclass(frozen=True)
class Call:
    """One synthetic call; ``scenario`` and ``outcome`` are the ground truth to check a summary against."""

    call_id: str
    scenario: str
    outcome: str
    queue: str
    agent_id: str
    agent_name: str
    customer_id: str
    customer_name: str
    started_at: datetime
    duration_seconds: int
    turns: tuple[Turn, ...]

    @property
    def transcript(self) -> str:
        """``Agent: …`` / ``Customer: …`` lines, one per turn."""
        return "\n".join(f"{t.speaker}: {t.text}" for t in self.turns)

    def row(self) -> dict[str, Any]:
        """The tabular form (JSONL, CSV, Parquet): the transcript plus passthrough columns."""
        return {
            "call_id": self.call_id,
            "transcript": self.transcript,
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "queue": self.queue,
            "scenario": self.scenario,
            "customer_id": self.customer_id,
            "started_at": self.started_at,
            "duration_seconds": self.duration_seconds,
            "language_code": "en-US",
        }


# --- phrase banks: {placeholders} are filled from each call's facts --------------------------------------

OPENINGS = (
    "Thank you for calling {company}, my name is {agent}. How can I help you today?",
    "Hi, you've reached {company} customer service, this is {agent} speaking. What can I do for you?",
    "Good {daypart}, thanks for holding. This is {agent} at {company}. How may I help?",
)
GREETINGS = (
    "Hi {agent}, my name is {customer}.",
    "Hello, this is {customer}.",
    "Hi there. My name is {customer} and I'm a customer of yours.",
)
PROBLEMS: Mapping[str, tuple[str, ...]] = {
    "billing": (
        "I'm calling about my latest bill. I was charged {amount} for {plan} but my plan is supposed to be "
        "{amount2} a month, so it looks like I've been overcharged.",
        "There's a charge of {amount} on my statement from {date} that I don't recognize and I'd like a "
        "refund.",
        "I was billed twice for the same invoice this month, once on {date} and again two days later.",
    ),
    "technical_support": (
        "My {device} keeps dropping the connection every few minutes and shows the error {error}.",
        "The {product} app crashes as soon as I open it since the update on {date}.",
        "I can't get my {device} to connect to the internet at all. I already tried restarting it twice.",
    ),
    "cancellation": (
        "I'd like to cancel my {plan} subscription. I'm moving to {city} and won't need it anymore.",
        "I want to close my account. Honestly the price went up to {amount} and I can't justify it.",
        "I'm calling to cancel my contract. I found a cheaper offer and I'd like to switch to another "
        "provider.",
    ),
    "complaint": (
        "I want to file a formal complaint. I've called three times about the same problem and nobody has "
        "fixed it. This is unacceptable.",
        "Your technician was supposed to come on {date} and never showed up. I took the day off work for "
        "nothing and I'm really frustrated.",
        "The last agent I spoke with was rude and hung up on me. I'd like to speak with a supervisor.",
    ),
    "order_status": (
        "I placed order {order} on {date} and it still hasn't arrived. The tracking hasn't updated in days.",
        "I'm checking on the status of my order {order}. It said delivery by {date} but I haven't received "
        "anything.",
        "My package for order {order} shows as delivered but it's not at my door.",
    ),
}
VERIFY = (
    (
        "I can help with that. Can I have the email address on the account, please?",
        "Sure, it's {email}.",
        "Thank you. And can you confirm the last four digits of the card on file?",
        "It ends in {last4}.",
    ),
    (
        "Let me pull up your account. Could you give me your account number or the phone number on file?",
        "The account number is {account}.",
        "Thanks. For security, what's the billing zip code?",
        "It's {zip}.",
    ),
)
VERIFIED = (
    "Perfect, I've verified your account.",
    "Great, thank you, I have your account in front of me now.",
    "Thanks, you're verified.",
)
EXCHANGES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "billing": (
        (
            "I see the charge of {amount} posted on {date}. Let me check where it came from.",
            "Okay. I just want to understand why it's so much higher than usual.",
        ),
        (
            "It looks like a promotional discount of {amount3} expired at the end of last cycle.",
            "Nobody told me the discount was ending. I would have remembered that.",
        ),
        (
            "I understand. I'm reviewing the invoice line by line so we can see each fee.",
            "Please do, because there's also a late fee I don't think I should have.",
        ),
        (
            "The payment on {date} was received, but it was applied one day after the due date.",
            "That's strange, I paid it as soon as the statement came in.",
        ),
        (
            "Can you confirm whether you'd like the credit applied to the card ending in {last4}?",
            "Yes, the card ending in {last4} is fine.",
        ),
    ),
    "technical_support": (
        (
            "Let's try a few troubleshooting steps. Can you unplug the {device} for thirty seconds and plug "
            "it "
            "back in?",
            "Okay, it's unplugged. Alright, it's back on now and the lights are blinking.",
        ),
        (
            "What color is the status light on the front of the {device} right now?",
            "It's flashing orange, and before it was solid green.",
        ),
        (
            "I'm running a remote diagnostic on your line. This can take a minute.",
            "Sure, take your time. I've been without a working connection since {date}.",
        ),
        (
            "I can see the firmware is on version {version}. There's a newer version available.",
            "Should I install it myself or can you push it from your side?",
        ),
        (
            "Could you open the settings page and read me the error code that is displayed?",
            "It says {error}, and underneath it says connection timed out.",
        ),
        (
            "Let's reset the network settings on the {product} app. Go to settings, then network, then "
            "reset.",
            "Okay, I did that. It's asking me to sign in again.",
        ),
    ),
    "cancellation": (
        (
            "I'm sorry to hear you want to leave. May I ask what the main reason is?",
            "Mostly the price. I'm paying {amount} a month now and I barely use it.",
        ),
        (
            "I can offer you a retention discount of {amount3} per month for the next twelve months.",
            "That's a little better, but I've really made up my mind.",
        ),
        (
            "There's also a lighter plan at {amount2} that keeps your current number and features.",
            "I appreciate the offer, but I still want to cancel.",
        ),
        (
            "Your contract runs until {date}. Cancelling early has a fee of {amount3}.",
            "I wasn't aware of an early termination fee. Can that be waived?",
        ),
        (
            "I can see you've been with us for {years} years, so let me check what options I have.",
            "Thanks, I'd appreciate that.",
        ),
    ),
    "complaint": (
        (
            "I'm very sorry about your experience. I can see the previous tickets on your account.",
            "Then you can see I've been dealing with this since {date}. It's ridiculous.",
        ),
        (
            "I understand your frustration, and I'm going to make sure this gets documented properly.",
            "I've heard that before. Every time I call I have to explain everything again.",
        ),
        (
            "Can you tell me exactly what happened on the last call so I can note it accurately?",
            "The agent told me someone would call me back within a day and nobody ever did.",
        ),
        (
            "I've added a note about the missed appointment on {date} to your file.",
            "I want some kind of compensation for the time I've wasted.",
        ),
        (
            "I completely understand. Let me review what I'm able to offer you.",
            "Okay, but I want this handled today.",
        ),
    ),
    "order_status": (
        (
            "I see order {order} was shipped from our {city} warehouse on {date}.",
            "Okay, but the tracking number hasn't moved since then.",
        ),
        (
            "The courier's last scan shows the package at the regional hub.",
            "That's what I see too. It's been sitting there for four days.",
        ),
        (
            "Can you confirm the shipping address is {address}?",
            "Yes, that's correct.",
        ),
        (
            "The order contains the {product} and one accessory, is that right?",
            "Yes, that's everything I ordered.",
        ),
        (
            "I'm checking with the courier now to see whether the package was misrouted.",
            "Thank you. I really need it before the weekend.",
        ),
    ),
}
# Exchanges any scenario can contain; they keep long calls from repeating the scenario's own lines.
FILLERS = (
    ("Let me put you on a brief hold while I check that.", "Sure, no problem."),
    ("Thanks for your patience, I'm back.", "Okay."),
    ("Just bear with me one moment while the page loads.", "Take your time."),
    ("I'm making a note of that on your account.", "Thank you."),
    ("Can I confirm the best number to reach you at?", "You can reach me at {phone}."),
    ("Is {email} still the best email for updates?", "Yes, that's the one I check."),
    (
        "I want to make sure I understand. Can you walk me through what happened on {date}?",
        "Sure. That's when I first noticed it, and it's been the same every day since.",
    ),
    ("How long have you had the {product} service?", "About {years} years now."),
    ("Do you still live at {address}?", "Yes, same address."),
    ("The system is a little slow today, sorry about that.", "That's okay, I'm not in a rush."),
    (
        "I'm reading through the notes from your previous call on {date}.",
        "Right, I spoke to someone then, but nothing changed.",
    ),
    ("Would it be okay if I send you a text with a reference number?", "Yes, please do."),
)
AGENT_LEADS = ("", "", "Okay. ", "Alright. ", "I see. ", "Got it. ", "Thanks for that. ", "Understood. ")
CUSTOMER_LEADS = ("", "", "Okay. ", "Right. ", "Yeah. ", "Sure. ", "Hmm. ", "Well, ")
RESOLUTIONS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "billing": {
        "resolved": (
            "I've processed a refund of {amount3} to the card ending in {last4}. You will receive a "
            "confirmation "
            "email within the hour, and the credit should show in three to five business days.",
        ),
        "escalated": (
            "I'm not able to reverse this charge myself, so I will escalate it to our billing specialist "
            "team. "
            "They will call you back within two business days.",
        ),
        "unresolved": (
            "Unfortunately the charge is valid according to the contract terms, so I can't remove it today.",
        ),
    },
    "technical_support": {
        "resolved": (
            "The update finished and the connection is stable now. It looks like that fixed it, and it is "
            "working again on our end too.",
        ),
        "escalated": (
            "Since the issue persists after the reset, I will open a ticket and escalate it to our tier 2 "
            "team. "
            "A technician will contact you within 24 hours to schedule a visit.",
        ),
        "unresolved": (
            "I'm afraid I can't find the cause from here. Please try again tomorrow after the maintenance "
            "window.",
        ),
    },
    "cancellation": {
        "resolved": (
            "Your subscription has been cancelled effective {date}. You will receive a final invoice and a "
            "confirmation number by email.",
        ),
        "escalated": (
            "I'll transfer your request to our retention specialist who can review the early termination "
            "fee. "
            "You should receive a call within one business day.",
        ),
        "unresolved": (
            "I'm not able to cancel the account today because it has an open balance. It needs to be paid "
            "first.",
        ),
    },
    "complaint": {
        "resolved": (
            "I've applied a service credit of {amount3} to your account and confirmed a new appointment for "
            "{date}. I will personally follow up to make sure it's kept.",
        ),
        "escalated": (
            "I'm escalating this to my supervisor right now as a formal complaint. A manager will contact "
            "you "
            "within 48 hours with a resolution.",
        ),
        "unresolved": ("I've documented everything, but I'm not able to offer compensation on this call.",),
    },
    "order_status": {
        "resolved": (
            "The courier confirmed the package is back on its way and will be delivered on {date}. I'll send "
            "you the updated tracking number by email.",
        ),
        "escalated": (
            "I've opened a lost package investigation with the courier. We will ship a replacement if it "
            "isn't found within three business days.",
        ),
        "unresolved": (
            "The courier hasn't given us an update yet, so I can't tell you when it will arrive.",
        ),
    },
}
OUTCOME_WEIGHTS: Mapping[str, tuple[float, float, float]] = {  # resolved, escalated, unresolved
    "billing": (0.6, 0.25, 0.15),
    "technical_support": (0.55, 0.35, 0.10),
    "cancellation": (0.6, 0.25, 0.15),
    "complaint": (0.35, 0.5, 0.15),
    "order_status": (0.6, 0.3, 0.1),
}
CUSTOMER_REACTIONS: Mapping[str, tuple[str, ...]] = {
    "resolved": (
        "Great, thank you so much for your help.",
        "Perfect, I appreciate it.",
        "That's wonderful, thanks.",
    ),
    "escalated": (
        "Okay. I hope someone actually calls me back this time.",
        "Alright, I'll wait for the call.",
    ),
    "unresolved": (
        "That's really disappointing. I'm not happy with this at all.",
        "This is frustrating, I called to get it fixed.",
    ),
}
CLOSINGS = (
    ("Is there anything else I can help you with today?", "No, that's all."),
    ("Is there anything else I can do for you?", "No, that's everything."),
)
GOODBYES = (
    "Thank you for calling {company}, {customer_first}. Have a great {daypart}.",
    "Thanks for your patience today. Take care, {customer_first}.",
)
COMPANIES = (
    "Northwind Telecom",
    "Bluepeak Energy",
    "Cobalt Mobile",
    "Harbor Home Internet",
    "Summit Streaming",
)
PRODUCTS = ("StreamBox", "HomeHub", "SmartMeter", "MyAccount", "FiberLink")
DEVICES = ("router", "modem", "set-top box", "smart thermostat", "mesh extender")
PLANS = ("Unlimited Plus", "Basic Saver", "Family Share", "Premium Fiber", "Essentials")
ERRORS = ("E-104", "NET-7", "ERR 503", "DNS-2", "AUTH-19")


def _facts(
    rng: random.Random, fake: Faker, agent_name: str, customer_name: str, start: datetime
) -> dict[str, str]:
    amount = rng.uniform(20, 250)
    day = start - timedelta(days=rng.randint(1, 40))
    return {
        "company": rng.choice(COMPANIES),
        "agent": agent_name.split()[0],
        "customer": customer_name,
        "customer_first": customer_name.split()[0],
        "daypart": "morning" if start.hour < 12 else "afternoon" if start.hour < 17 else "evening",
        "amount": f"${amount:,.2f}",
        "amount2": f"${amount * rng.uniform(0.4, 0.8):,.2f}",
        "amount3": f"${amount * rng.uniform(0.1, 0.5):,.2f}",
        "date": f"{day:%B} {day.day}",
        "order": f"{rng.randint(100, 999)}-{rng.randint(1_000_000, 9_999_999)}",
        "plan": rng.choice(PLANS),
        "product": rng.choice(PRODUCTS),
        "device": rng.choice(DEVICES),
        "error": rng.choice(ERRORS),
        "version": f"{rng.randint(2, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        "city": fake.city(),
        "address": f"{fake.street_address()}, {fake.city()}",
        "email": fake.email(),
        "last4": f"{rng.randint(0, 9999):04d}",
        "account": f"{rng.randint(10**9, 10**10 - 1)}",
        "zip": fake.postcode(),
        "years": str(rng.randint(2, 15)),
        "phone": fake.numerify("(###) ###-####"),
    }


def _fill(text: str, facts: Mapping[str, str]) -> str:
    return text.format_map(facts)


def _size(turns: Sequence[Turn]) -> int:
    return sum(len(t.speaker) + 2 + len(t.text.encode()) + 1 for t in turns)


def _target_bytes(rng: random.Random, min_bytes: int, max_bytes: int) -> int:
    # Most calls are short; a long tail reaches the maximum, like real contact-center traffic.
    roll = rng.random()
    if roll < 0.7:
        low, high = min_bytes * 1.5, max_bytes * 0.3
    elif roll < 0.95:
        low, high = max_bytes * 0.3, max_bytes * 0.6
    else:
        low, high = max_bytes * 0.6, max_bytes * 0.95
    return int(rng.uniform(min(low, high), high))


_FAKER: list[Faker] = []


def _faker() -> Faker:
    # Building a Faker costs milliseconds; one instance, reseeded per call, keeps calls independent.
    if not _FAKER:
        _FAKER.append(Faker("en_US"))
    return _FAKER[0]


def _exchanges(rng: random.Random, scenario: str) -> Iterator[tuple[str, str]]:
    """Endless exchanges: each pass over the scenario's and the shared lines is a fresh shuffle."""
    while True:
        deck = [*EXCHANGES[scenario], *EXCHANGES[scenario], *FILLERS]
        rng.shuffle(deck)
        for agent_line, customer_line in deck:
            yield _lead(rng.choice(AGENT_LEADS), agent_line), _lead(rng.choice(CUSTOMER_LEADS), customer_line)


def _lead(lead: str, line: str) -> str:
    """``line`` opened by a filler word, unless it already opens with it ("Okay. Okay, …")."""
    if not lead or line.lower().startswith(lead.strip(" .,").lower()):
        return line
    return lead + (line[0].lower() + line[1:] if lead.endswith(", ") else line)


def make_call(seed: int, index: int, *, min_bytes: int = MIN_BYTES, max_bytes: int = MAX_BYTES) -> Call:
    """Call number ``index`` of ``seed``; its transcript has ``min_bytes`` to ``max_bytes`` (UTF-8)."""
    rng = random.Random(f"{seed}:{index}")
    fake = _faker()
    fake.seed_instance(rng.getrandbits(64))
    scenario = SCENARIOS[rng.randrange(len(SCENARIOS))]
    outcome = rng.choices(("resolved", "escalated", "unresolved"), OUTCOME_WEIGHTS[scenario])[0]
    start = _EPOCH + timedelta(days=rng.randint(0, 180), seconds=rng.randint(8 * 3600, 20 * 3600))
    agent_name, customer_name = fake.name(), fake.name()
    facts = _facts(rng, fake, agent_name, customer_name, start)

    def say(speaker: Speaker, text: str) -> Turn:
        return Turn(speaker, _fill(text, facts))

    opening = [
        say("Agent", rng.choice(OPENINGS)),
        say("Customer", rng.choice(GREETINGS) + " " + rng.choice(PROBLEMS[scenario])),
    ]
    opening += [say("Agent" if i % 2 == 0 else "Customer", line) for i, line in enumerate(rng.choice(VERIFY))]
    ending = [
        say("Agent", rng.choice(RESOLUTIONS[scenario][outcome])),
        say("Customer", rng.choice(CUSTOMER_REACTIONS[outcome])),
    ]
    closing_question, closing_answer = rng.choice(CLOSINGS)
    ending += [
        say("Agent", closing_question),
        say("Customer", closing_answer),
        say("Agent", rng.choice(GOODBYES)),
    ]

    body: list[Turn] = []
    target = max(_target_bytes(rng, min_bytes, max_bytes), min_bytes)
    size = _size(opening) + _size(ending)
    exchanges = _exchanges(rng, scenario)
    verified = rng.choice(VERIFIED) + " "
    while size < target:
        agent_line, customer_line = next(exchanges)
        pair = [say("Agent", verified * (not body) + agent_line), say("Customer", customer_line)]
        if size + _size(pair) > max_bytes:
            break
        body += pair
        size += _size(pair)
    if not body:
        ending[0] = Turn("Agent", verified + ending[0].text)
    turns = tuple(opening + body + ending)
    words = sum(len(t.text.split()) for t in turns)
    return Call(
        call_id=f"call-{seed}-{index + 1:06d}",
        scenario=scenario,
        outcome=outcome,
        queue=QUEUES[scenario],
        agent_id=f"AGT-{rng.randint(1000, 9999)}",
        agent_name=agent_name,
        customer_id=f"CUST-{rng.randint(10**7, 10**8 - 1)}",
        customer_name=customer_name,
        started_at=start,
        duration_seconds=int(words / 2.5) + rng.randint(20, 240),  # ~150 words a minute plus holds
        turns=turns,
    )


def generate_calls(
    n: int, seed: int = 0, *, min_bytes: int = MIN_BYTES, max_bytes: int = MAX_BYTES
) -> Iterator[Call]:
    """``n`` synthetic calls, the same ones for the same ``seed``."""
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if not 0 < min_bytes <= max_bytes:
        raise ValueError(f"need 0 < min_bytes <= max_bytes, got {min_bytes} and {max_bytes}")
    for index in range(n):
        yield make_call(seed, index, min_bytes=min_bytes, max_bytes=max_bytes)
