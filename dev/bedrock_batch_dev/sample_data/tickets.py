"""Synthetic customer-support tickets for an extraction pipeline, deterministic by seed, each with its truth.

A ticket is an email, a chat or a web-form message. The generator decides the facts first (the issue, the
product, the order id, error codes, the requested actions, a refund amount, the urgency, sometimes a second
issue or nothing extractable at all), then writes a body that states exactly those facts, so
``Ticket.truth`` is what an extraction should return. The truth is not a column of the written file. Ticket
``i`` of a seed is the same whatever ``n`` is.
"""

from __future__ import annotations

import random
import textwrap
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bedrock_batch_dev.sample_data.calls import _faker

CHANNELS = ("email", "chat", "web")
PRIORITIES = ("low", "normal", "high", "urgent")
TICKET_CATEGORIES = (
    "delivery",
    "damaged_item",
    "wrong_item",
    "billing",
    "technical_issue",
    "account_access",
    "return_request",
    "cancellation",
    "general_inquiry",
)
REQUESTED_ACTIONS = (
    "refund",
    "replacement",
    "return_label",
    "cancel_order",
    "reship",
    "delivery_update",
    "change_address",
    "technical_help",
    "account_unlock",
    "invoice_copy",
    "callback",
)
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "JPY")
_CATEGORY_WEIGHTS = (0.18, 0.12, 0.07, 0.12, 0.14, 0.08, 0.1, 0.09, 0.1)
_CHANNEL_WEIGHTS = (0.55, 0.25, 0.2)
_URGENCY_WEIGHTS = (0.15, 0.5, 0.25, 0.1)
_CURRENCY_WEIGHTS = (0.6, 0.2, 0.1, 0.06, 0.04)
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Issue:
    """One problem a ticket reports; ``None`` or empty where the text does not say."""

    category: str
    product: str | None = None
    order_id: str | None = None
    error_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refund:
    """A refund the customer asks for with an explicit amount."""

    amount: Decimal
    currency: str


@dataclass(frozen=True)
class TicketTruth:
    """The facts the generator put in a ticket: what an extraction should return.

    :param issue: the main issue.
    :param requested_actions: every action the customer asks for, the second issue's included.
    :param refund: set only when the text names an amount; a refund asked without one is only an action.
    :param urgency: what the text conveys ("normal" when it says nothing), not the ``priority`` column.
    :param other_issues: a second, unrelated issue the customer raises (its order id, if any, is its own).
    """

    issue: Issue
    requested_actions: tuple[str, ...]
    refund: Refund | None
    urgency: str
    other_issues: tuple[Issue, ...] = ()

    @property
    def extractable(self) -> bool:
        """Whether the text holds any concrete fact (a product, an order id, an error code, an amount)."""
        issues = (self.issue, *self.other_issues)
        return self.refund is not None or any(i.product or i.order_id or i.error_codes for i in issues)

    def extraction(self) -> dict[str, Any]:
        """The expected extraction: ``{"issue": {…}, "requested_actions": […], "refund"?: {…}, "urgency"}``.

        Optional fields (``order_id``, ``refund``) are left out when the text does not state them.
        """
        issue: dict[str, Any] = {"category": self.issue.category, "product": self.issue.product}
        if self.issue.order_id is not None:
            issue["order_id"] = self.issue.order_id
        issue["error_codes"] = list(self.issue.error_codes)
        result: dict[str, Any] = {"issue": issue, "requested_actions": list(self.requested_actions)}
        if self.refund is not None:
            result["refund"] = {"amount": float(self.refund.amount), "currency": self.refund.currency}
        result["urgency"] = self.urgency
        return result


@dataclass(frozen=True)
class Ticket:
    """One synthetic support ticket; ``truth`` is the ground truth, never a column of the written file."""

    ticket_id: str
    created_at: datetime
    channel: str
    customer_email: str
    subject: str
    body: str
    priority: str | None
    truth: TicketTruth

    def row(self) -> dict[str, Any]:
        """The tabular form (CSV, Parquet, JSONL): the source columns, without the truth."""
        return {
            "ticket_id": self.ticket_id,
            "created_at": self.created_at,
            "channel": self.channel,
            "customer_email": self.customer_email,
            "subject": self.subject,
            "body": self.body,
            "priority": self.priority,
        }


# --- phrase banks: {placeholders} come from the ticket's facts ------------------------------------------

PRODUCTS = (
    "Nimbus Wireless Earbuds",
    "Aurora X2 Smart Speaker",
    "Vela Air Fryer 5.8 qt",
    "Kestrel Electric Toothbrush",
    "TrailPro 40L Backpack",
    "Lumen LED Desk Lamp",
    "Orbit Fitness Tracker",
    "Cascade Water Filter Pitcher",
    "Summit Rain Jacket",
    "Pixel Pro 4K Webcam",
    "HomeHub Mesh Router",
    "Breeze Tower Fan",
    "Atlas Standing Desk",
    "Echo Trail Running Shoes",
    "Polar Insulated Bottle 32 oz",
    "Café Barista Milk Frother",
    "Nordlys Wool Blanket",
    "Schön Ceramic Knife Set",
)
# The products that can show an error or stop working, for technical issues.
DEVICES = (
    "Nimbus Wireless Earbuds",
    "Aurora X2 Smart Speaker",
    "Kestrel Electric Toothbrush",
    "Orbit Fitness Tracker",
    "Pixel Pro 4K Webcam",
    "HomeHub Mesh Router",
    "Breeze Tower Fan",
    "Atlas Standing Desk",
    "Café Barista Milk Frother",
)
# What a customer writes instead of the product's name when they do not give it.
UNNAMED_PRODUCT = ("the item", "the product", "my purchase", "what I ordered")
UNNAMED_DEVICE = ("the device", "my device", "the unit")
UNNAMED_ORDER = ("my order", "the order", "my last order", "my recent order")
# Per category: the error codes a customer may quote, and how often they quote none, one or two.
ERRORS: Mapping[str, tuple[tuple[str, ...], tuple[float, float, float]]] = {
    "technical_issue": (
        ("E-104", "ERR-2203", "0x80070005", "PAY-402", "SYNC-7", "HTTP 503", "E17", "NET-12", "FW-0091"),
        (0.25, 0.55, 0.2),
    ),
    "account_access": (("AUTH-19", "LOGIN-401", "2FA-08", "ACC-LOCK-3"), (0.5, 0.5, 0.0)),
}
# Per category: how often the text names the product and the order id.
MENTIONS: Mapping[str, tuple[float, float]] = {
    "delivery": (0.6, 0.85),
    "damaged_item": (0.9, 0.75),
    "wrong_item": (0.9, 0.8),
    "billing": (0.4, 0.85),
    "technical_issue": (0.9, 0.25),
    "account_access": (0.0, 0.0),
    "return_request": (0.85, 0.7),
    "cancellation": (0.7, 0.9),
    "general_inquiry": (0.0, 0.0),
}
ISSUES: Mapping[str, tuple[str, ...]] = {
    "delivery": (
        "I placed {order} on {date} and it still hasn't arrived.",
        "The tracking for {order} hasn't updated since {date}.",
        "I'm still waiting for {product} from {order}. It was supposed to arrive by {date}.",
        "The courier says {order} was delivered on {date}, but there was nothing at my door.",
        'I ordered {product} almost two weeks ago and {order} still shows as "processing".',
    ),
    "damaged_item": (
        "{order} arrived today but {product} was broken inside the box.",
        "I received {product} from {order} and it looks used, with scuffs and stains all over it.",
        "{product} from {order} was damaged in transit, the box was completely crushed.",
        "When I opened the package from {order}, {product} was torn and one part was missing.",
    ),
    "wrong_item": (
        "I ordered {product} but received something completely different in {order}.",
        "{order} contained the wrong item: instead of {product} I got a phone case.",
        "You sent me the wrong color. {order} was for {product} in black, and I received white.",
    ),
    "billing": (
        "I was charged twice for {order}.",
        "My card statement shows two payments for {order} on {date}.",
        "The amount charged for {order} is higher than the price shown at checkout.",
        "I was billed for {product} even though I cancelled {order} on {date}.",
    ),
    "technical_issue": (
        "{product} stopped working after the last update.",
        "{product} keeps disconnecting every few minutes.",
        "I can't finish setting up {product}, the app gets stuck on the last step.",
        "{product} won't turn on since yesterday, even when it's plugged in.",
        "The app crashes whenever I try to connect {product}.",
    ),
    "account_access": (
        "I can't log in to my account.",
        "My account got locked after I reset my password.",
        "The verification code never arrives, so I'm stuck at the login screen.",
        "I keep getting logged out of the app and now I can't sign back in.",
    ),
    "return_request": (
        "I'd like to return {product} from {order}, it's not what I expected.",
        "{product} doesn't fit my needs, so I want to send it back.",
        "I want to return {order}. It's unused and still in the original packaging.",
    ),
    "cancellation": (
        "Please cancel {order}, I ordered {product} by mistake.",
        "I need to cancel {order} before it ships.",
        "I changed my mind about {product}, can you cancel {order}?",
    ),
    "general_inquiry": (
        "I have a question about my account, can someone get back to me?",
        "Is anyone there? I need some help with something.",
        "Something is wrong and I'm not sure who to ask.",
        "I tried the help pages but couldn't find an answer.",
        "I was told to contact this address, so here I am.",
    ),
}
ERROR_SENTENCES = (
    (
        "It shows error {e1}.",
        "The screen says {e1}.",
        'I get the error "{e1}" every time.',
        "Error code: {e1}.",
    ),
    (
        "First it showed {e1}, and after a restart it now says {e2}.",
        "I get {e1} and sometimes {e2}.",
        "The error is {e1} (before that it was {e2}).",
    ),
)
# Per category: the sets of actions a customer asks for.
ACTION_SETS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "delivery": (
        ("delivery_update",),
        ("delivery_update", "reship"),
        ("refund",),
        ("reship",),
        ("delivery_update", "change_address"),
    ),
    "damaged_item": (
        ("replacement",),
        ("refund",),
        ("refund", "return_label"),
        ("replacement", "return_label"),
    ),
    "wrong_item": (("replacement", "return_label"), ("replacement",), ("refund",)),
    "billing": (("refund",), ("refund", "invoice_copy"), ("invoice_copy",)),
    "technical_issue": (("technical_help",), ("replacement",), ("technical_help", "callback"), ("refund",)),
    "account_access": (("account_unlock",), ("account_unlock", "callback")),
    "return_request": (("return_label",), ("return_label", "refund")),
    "cancellation": (("cancel_order",), ("cancel_order", "refund")),
    "general_inquiry": ((), ("callback",)),
}
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "refund": ("I'd like a full refund.", "Please refund me.", "I want my money back."),
    "replacement": ("Please send me a replacement.", "Can you ship a new one?", "I'd like it replaced."),
    "return_label": (
        "Please email me a return label.",
        "Can you send a prepaid return label?",
        "How do I send it back? I need a return label.",
    ),
    "cancel_order": ("Please cancel it.",),
    "reship": ("Please ship it again.", "Can you resend the package?"),
    "delivery_update": (
        "Can you tell me where it is?",
        "Please check with the courier and let me know.",
        "I need an update on the delivery.",
    ),
    "change_address": ("Please ship it to my new address instead:\n{address}",),
    "technical_help": (
        "Can you help me get it working?",
        "What should I do to fix this?",
        "Please tell me how to fix it.",
    ),
    "account_unlock": ("Please unlock my account.", "I need access to my account restored."),
    "invoice_copy": ("Could you also send me a copy of the invoice?", "I need an invoice for my records."),
    "callback": ("Please call me back at {phone}.", "Can someone call me? My number is {phone}."),
}
REFUND_WITH_AMOUNT = (
    "Please refund the {amount} to my card.",
    "I'd like a refund of {amount}.",
    "I expect the full {amount} back.",
    "Please refund me {amount}, that's what I paid.",
)
URGENCY: Mapping[str, tuple[str, ...]] = {
    "low": (
        "No rush on this.",
        "Whenever you get a chance is fine.",
        "Not urgent, just wanted to let you know.",
    ),
    "normal": (),
    "high": (
        "Please look into this soon.",
        "I'd appreciate a quick answer.",
        "This is the second time I'm writing about this.",
    ),
    "urgent": (
        "I need this resolved TODAY.",
        "This is urgent, it's a gift for {date2}.",
        "Please treat this as urgent, I've been waiting for over a week.",
        "URGENT: I'm leaving on a trip on {date2} and need it sorted before then.",
    ),
}
# A second, unrelated issue: its category, the action it asks for (if any), and whether it names an order.
SECOND_ISSUES: tuple[tuple[str, str | None, str], ...] = (
    (
        "billing",
        "invoice_copy",
        "Also, could you send me the invoice for {order2}? I can't find it in my account.",
    ),
    (
        "billing",
        "refund",
        "Also, I paid for express shipping on {order2} but it came by regular mail, please refund the "
        "difference.",
    ),
    (
        "delivery",
        "delivery_update",
        "While I have you: {order2} hasn't shipped yet either, can you check on it?",
    ),
    ("account_access", None, "Unrelated, but I also can't change the email address in my profile."),
    ("general_inquiry", None, "And one more question: do you ship to Canada?"),
)
SUBJECTS: Mapping[str, tuple[str, ...]] = {
    "delivery": (
        "Where is my order?",
        "Order {order_id} not delivered",
        "Package not received",
        "Late delivery",
    ),
    "damaged_item": ("Damaged item", "{product} arrived broken", "Broken on arrival, order {order_id}"),
    "wrong_item": ("Wrong item received", "Wrong item in order {order_id}", "Not what I ordered"),
    "billing": ("Charged twice", "Billing problem", "Question about my invoice, order {order_id}"),
    "technical_issue": ("Error {error}", "{product} not working", "App crashes", "Technical problem"),
    "account_access": ("Can't log in", "Account locked", "Login problem"),
    "return_request": ("Return request", "Return {product}", "How do I return an item?"),
    "cancellation": ("Cancel order {order_id}", "Cancellation", "Please cancel my order"),
    "general_inquiry": ("Question", "Help", "(no subject)", "Hello", "Need help"),
}
TOPICS: Mapping[str, str] = {  # the web form's topic menu
    "delivery": "Delivery",
    "damaged_item": "Damaged or defective item",
    "wrong_item": "Wrong item",
    "billing": "Billing and payments",
    "technical_issue": "Technical support",
    "account_access": "My account",
    "return_request": "Returns",
    "cancellation": "Cancel an order",
    "general_inquiry": "Other",
}
GREETINGS = (
    "Hi,",
    "Hello,",
    "Hi there,",
    "Dear Customer Service,",
    "Hello support team,",
    "Good morning,",
    "",
)
SIGN_OFFS = (
    "Thanks,\n{first}",
    "Best regards,\n{full}",
    "Kind regards,\n{full}\nTel. {phone}",
    "Cheers,\n{first}",
    "{first}",
    "Thank you!\n{full}",
)
CHAT_STARTS = (
    "Chat started from the help center",
    "Chat started on the order page",
    "Visitor joined the chat",
)
CHAT_HELLOS = ("hi", "hello", "hey there", "Hi, anyone there?", "")
NON_ASCII_FIRST = (
    "Zoë",
    "José",
    "Chloé",
    "Søren",
    "Małgorzata",
    "Jürgen",
    "Renée",
    "Björn",
    "Łukasz",
    "Inés",
)
NON_ASCII_LAST = ("Müller", "Núñez", "Østergaard", "Lefèvre", "Kowalczyk", "Šimek", "Ó Briain", "Gonçalves")


# Letters NFKD does not decompose into an ASCII base letter.
_ASCII = str.maketrans({"ø": "o", "ł": "l", "ß": "ss", "æ": "ae", "đ": "d"})


def _order_id(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"ORD-{rng.randint(10**7, 10**8 - 1)}"
    return f"{rng.randint(100, 999)}-{rng.randint(10**6, 10**7 - 1)}-{rng.randint(10**6, 10**7 - 1)}"


def _money(rng: random.Random, currency: str) -> tuple[Decimal, str]:
    """An amount and the way a customer writes it ("$1,049.00", "49,99 €", "¥4,800", "35.00 CAD")."""
    if currency == "JPY":
        amount = Decimal(rng.randint(10, 600) * 100)
        number = f"{amount:,}"
        return amount, rng.choice((f"¥{number}", f"{amount} JPY", f"{number} yen"))
    cents = rng.choice((99, 99, 0, rng.randint(1, 98)))
    whole = rng.randint(5, 400) if rng.random() < 0.9 else rng.randint(400, 2500)
    amount = Decimal(whole * 100 + cents) / 100
    us = f"{amount:,.2f}"
    eu = us.replace(",", " ").replace(".", ",").replace(" ", ".")
    styles = {
        "USD": (f"${us}", f"{us} USD", f"USD {us}"),
        "EUR": (f"€{eu}", f"{eu} €", f"EUR {us}", f"{us} EUR"),
        "GBP": (f"£{us}", f"{us} GBP"),
        "CAD": (f"CA${us}", f"{us} CAD", f"C${us}"),
    }
    return amount, rng.choice(styles[currency])


def _name(rng: random.Random) -> tuple[str, str]:
    fake = _faker()
    first = rng.choice(NON_ASCII_FIRST) if rng.random() < 0.12 else fake.first_name()
    last = rng.choice(NON_ASCII_LAST) if rng.random() < 0.12 else fake.last_name()
    return first, last


def _email(rng: random.Random, first: str, last: str) -> str:
    if rng.random() < 0.15:  # a shared or old address that does not match the name
        return str(_faker().email())
    local = f"{first}.{last}".lower().replace(" ", "").translate(_ASCII)
    local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    if rng.random() < 0.4:
        local += str(rng.randint(1, 99))
    return f"{local}@{_faker().free_email_domain()}"


def _sentence(template: str, facts: Mapping[str, str]) -> str:
    text = template.format_map(facts)
    return text[0].upper() + text[1:]


def _issue(
    rng: random.Random, category: str, facts: dict[str, str]
) -> tuple[Issue, list[str], dict[str, str]]:
    """The main issue, the sentences that state it, and the facts a subject line may use."""
    template = rng.choice(ISSUES[category])
    names_product, names_order = (rng.random() < p for p in MENTIONS[category])
    products = DEVICES if category == "technical_issue" else PRODUCTS
    product = rng.choice(products) if names_product and "{product}" in template else None
    order_id = _order_id(rng) if names_order and "{order}" in template else None
    unnamed = UNNAMED_DEVICE if category == "technical_issue" else UNNAMED_PRODUCT
    facts["product"] = f"the {product}" if product else rng.choice(unnamed)
    if order_id:
        facts["order"] = rng.choice(("order {}", "order #{}", "order number {}", "my order {}")).format(
            order_id
        )
    else:
        facts["order"] = rng.choice(UNNAMED_ORDER)
    sentences = [_sentence(template, facts)]
    codes: tuple[str, ...] = ()
    if category in ERRORS:
        errors, weights = ERRORS[category]
        codes = tuple(rng.sample(errors, rng.choices((0, 1, 2), weights)[0]))
        if codes:
            error_template = rng.choice(ERROR_SENTENCES[len(codes) - 1])
            sentences.append(error_template.format(**{f"e{i + 1}": c for i, c in enumerate(codes)}))
    subject_facts = {"product": product or "", "order_id": order_id or "", "error": codes[0] if codes else ""}
    return Issue(category, product, order_id, codes), sentences, subject_facts


def _requests(
    rng: random.Random, category: str, facts: Mapping[str, str]
) -> tuple[tuple[str, ...], Refund | None, list[str]]:
    """The actions asked for, the refund if an amount is named, and the sentences that ask."""
    actions = rng.choice(ACTION_SETS[category])
    refund = None
    sentences = []
    for action in actions:
        if action == "cancel_order" and category == "cancellation":
            continue  # the issue sentence already asks for it
        if action == "refund" and rng.random() < 0.65:
            currency = rng.choices(CURRENCIES, _CURRENCY_WEIGHTS)[0]
            amount, written = _money(rng, currency)
            refund = Refund(amount, currency)
            sentences.append(rng.choice(REFUND_WITH_AMOUNT).format(amount=written))
        else:
            sentences.append(rng.choice(ACTIONS[action]).format_map(facts))
    return actions, refund, sentences


def _subject(rng: random.Random, category: str, subject_facts: Mapping[str, str], urgency: str) -> str:
    usable = [
        s
        for s in SUBJECTS[category]
        if all(subject_facts[key] for key in ("product", "order_id", "error") if "{" + key + "}" in s)
    ]
    subject = rng.choice(usable).format_map(subject_facts)
    if urgency == "urgent" and rng.random() < 0.5:
        subject = "URGENT: " + subject
    elif rng.random() < 0.1:
        subject = "Re: " + subject
    return subject


def _email_body(rng: random.Random, parts: Sequence[list[str]], facts: Mapping[str, str]) -> str:
    issue, request, second = parts
    paragraphs = [" ".join(issue), " ".join(request)] if rng.random() < 0.7 else [" ".join(issue + request)]
    if second:
        paragraphs.append(" ".join(second))
    paragraphs = [p for p in paragraphs if p]
    if rng.random() < 0.25:  # plain-text mail clients hard-wrap lines at 72 characters
        paragraphs = [
            "\n".join(
                textwrap.fill(line, 72, break_long_words=False, break_on_hyphens=False)
                for line in p.split("\n")
            )
            for p in paragraphs
        ]
    greeting = rng.choice(GREETINGS)
    body = "\n\n".join(
        [*([greeting] if greeting else []), *paragraphs, rng.choice(SIGN_OFFS).format_map(facts)]
    )
    if rng.random() < 0.1:
        body += "\n\nSent from my iPhone"
    if rng.random() < 0.15:
        body += (
            f"\n\nOn {facts['date']}, Support <support@{facts['domain']}> wrote:\n> Hello {facts['first']},\n"
            f"> Thank you for contacting us. Your case number is CS-{facts['case']}.\n"
            "> We will get back to you within 48 hours."
        )
    return body


def _chat_body(rng: random.Random, parts: Sequence[list[str]], created_at: datetime) -> str:
    hello = rng.choice(CHAT_HELLOS)
    messages = [*([hello] if hello else []), *(s.replace("\n", ", ") for part in parts for s in part)]
    lines = [f"[{created_at:%H:%M}] {rng.choice(CHAT_STARTS)}"]
    clock = created_at
    casual = rng.random() < 0.5
    for message in messages:
        clock += timedelta(seconds=rng.randint(4, 50))
        if casual and message[1:2].islower():
            message = message[0].lower() + message[1:].removesuffix(".")
        lines.append(f"[{clock:%H:%M}] Visitor: {message}")
    return "\n".join(lines)


def _web_body(rng: random.Random, parts: Sequence[list[str]], issue: Issue, facts: Mapping[str, str]) -> str:
    topic = TOPICS[issue.category] if rng.random() < 0.85 else "Other"
    message = " ".join(s for part in parts for s in part)
    order = f" {issue.order_id}" if issue.order_id else ""  # an empty form field
    return f"Name: {facts['full']}\nOrder number:{order}\nTopic: {topic}\n\nMessage:\n{message}"


def make_ticket(seed: int, index: int) -> Ticket:
    """Ticket number ``index`` of ``seed``."""
    rng = random.Random(f"{seed}:ticket:{index}")
    fake = _faker()
    fake.seed_instance(rng.getrandbits(64))
    created_at = _EPOCH + timedelta(seconds=rng.randrange(365 * 86_400))
    category = rng.choices(TICKET_CATEGORIES, _CATEGORY_WEIGHTS)[0]
    channel = rng.choices(CHANNELS, _CHANNEL_WEIGHTS)[0]
    first, last = _name(rng)
    day = created_at - timedelta(days=rng.randint(1, 20))
    later = created_at + timedelta(days=rng.randint(2, 10))
    facts = {
        "first": first,
        "full": f"{first} {last}",
        "date": f"{day:%B} {day.day}",
        "date2": f"{later:%B} {later.day}",
        "phone": fake.numerify(rng.choice(("(###) ###-####", "+1 ###-###-####", "###.###.####"))),
        "address": f"{fake.street_address()}\n{fake.city()}, {fake.state_abbr()} {fake.postcode()}",
        "domain": rng.choice(("shopnorthwind.com", "bluepeak-store.com", "cobaltgoods.com")),
        "case": str(rng.randint(100_000, 999_999)),
    }
    issue, issue_sentences, subject_facts = _issue(rng, category, facts)
    actions, refund, request = _requests(rng, category, facts)
    urgency = rng.choices(PRIORITIES, _URGENCY_WEIGHTS)[0]
    if URGENCY[urgency]:
        request.append(rng.choice(URGENCY[urgency]).format_map(facts))
    others: list[Issue] = []
    second: list[str] = []
    if category != "general_inquiry" and rng.random() < 0.2:
        other_category, other_action, template = rng.choice(SECOND_ISSUES)
        other_order = _order_id(rng) if "{order2}" in template and rng.random() < 0.6 else None
        second.append(template.format(order2=f"order {other_order}" if other_order else "my other order"))
        others.append(Issue(other_category, order_id=other_order))
        if other_action and other_action not in actions:
            actions = (*actions, other_action)
    parts = (issue_sentences, request, second)
    if channel == "email":
        body = _email_body(rng, parts, facts)
    elif channel == "chat":
        body = _chat_body(rng, parts, created_at)
    else:
        body = _web_body(rng, parts, issue, facts)
    if channel != "web" and rng.random() < 0.2:
        body = body.replace("'", "\u2019")  # phones and mail apps type curly apostrophes
    roll = rng.random()
    priority = urgency if roll < 0.65 else None if roll < 0.85 else rng.choice(PRIORITIES)
    return Ticket(
        ticket_id=f"ticket-{seed}-{index + 1:06d}",
        created_at=created_at,
        channel=channel,
        customer_email=_email(rng, first, last),
        subject=f"Chat with {first}"
        if channel == "chat" and rng.random() < 0.5
        else _subject(rng, category, subject_facts, urgency),
        body=body,
        priority=priority,
        truth=TicketTruth(issue, actions, refund, urgency, tuple(others)),
    )


def generate_tickets(n: int, seed: int = 0) -> Iterator[Ticket]:
    """``n`` synthetic tickets, the same ones for the same ``seed``, made one at a time."""
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    for index in range(n):
        yield make_ticket(seed, index)
