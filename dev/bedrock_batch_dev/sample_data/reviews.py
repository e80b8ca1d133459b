"""Synthetic product reviews for a classification pipeline, deterministic by seed, each with its ground truth.

The generator picks a review's overall label and the aspects it talks about (each with a sentiment) first,
then writes text from per-aspect phrase banks that carries exactly those, so ``Review.truth`` is what a
classifier should find. The truth is not a column of the written file. Review ``i`` of a seed is the same
whatever ``n`` is, so a small sample is a prefix of a large one.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from bedrock_batch_dev.sample_data.calls import _faker

REVIEW_LABELS = ("positive", "negative", "mixed", "neutral")
ASPECT_SENTIMENTS = ("positive", "negative", "neutral")
ASPECTS = (
    "price",
    "quality",
    "shipping",
    "durability",
    "customer_service",
    "size_fit",
    "battery",
    "ease_of_use",
    "packaging",
    "comfort",
)
LANGUAGES = ("en", "de", "es", "fr", "it", "pt")
# Mostly English, a few short reviews in other languages, like a marketplace that ships abroad.
LANGUAGE_WEIGHTS = (0.94, 0.015, 0.015, 0.012, 0.009, 0.009)
LABEL_WEIGHTS = (0.5, 0.2, 0.18, 0.12)
RATINGS: Mapping[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "positive": ((5, 4), (0.65, 0.35)),
    "negative": ((1, 2), (0.6, 0.4)),
    "mixed": ((2, 3, 4), (0.2, 0.5, 0.3)),
    "neutral": ((2, 3, 4), (0.15, 0.6, 0.25)),
}
CATALOG_SIZE = 500
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

# Words that name each aspect; every sentence written for an aspect contains one (tests rely on it).
ASPECT_KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "price": ("price", "money", "value", "cheap", "expensive", "cost", "paid", "bargain", "$", "penny"),
    "quality": ("quality", "well made", "cheaply made", "flimsy", "materials", "solid"),
    "shipping": ("shipping", "shipped", "arrived", "delivery", "courier"),
    "durability": ("durable", "broke", "fell apart", "last", "held up", "holding up", "going strong", "wear"),
    "customer_service": ("customer service", "support", "seller"),
    "size_fit": ("size", "fit", "tight", "too big", "small"),
    "battery": ("battery", "charge"),
    "ease_of_use": ("easy", "setup", "set up", "instructions", "intuitive", "controls", "to use"),
    "packaging": ("packaging", "packaged", "box"),
    "comfort": ("comfortable", "comfy", "hurts", "comfort"),
}


@dataclass(frozen=True)
class AspectMention:
    """One aspect the review talks about, and how the reviewer feels about it."""

    aspect: str
    sentiment: str


@dataclass(frozen=True)
class ReviewTruth:
    """What the generator wove into a review: the label a classifier should give and the aspects to list."""

    label: str
    aspects: tuple[AspectMention, ...]

    @property
    def aspect_names(self) -> tuple[str, ...]:
        return tuple(m.aspect for m in self.aspects)


@dataclass(frozen=True)
class Review:
    """One synthetic product review; ``truth`` is the ground truth, never a column of the written file."""

    review_id: str
    product_id: str
    product_category: str
    rating: int
    title: str
    review_text: str
    language: str
    created_at: datetime
    truth: ReviewTruth

    def row(self) -> dict[str, Any]:
        """The tabular form (Parquet, CSV, JSONL): the source columns, without the truth."""
        return {
            "review_id": self.review_id,
            "product_id": self.product_id,
            "product_category": self.product_category,
            "rating": self.rating,
            "title": self.title,
            "review_text": self.review_text,
            "language": self.language,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Product:
    noun: str
    category: str
    aspects: tuple[str, ...]  # on top of COMMON_ASPECTS
    price_range: tuple[int, int]
    sizes: tuple[str, ...] = ()


COMMON_ASPECTS = ("price", "quality", "shipping", "customer_service", "packaging")
_LETTER_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
_SHOE_SIZES = ("7", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")
PRODUCTS = (
    Product(
        "wireless earbuds", "electronics", ("battery", "comfort", "durability", "ease_of_use"), (20, 180)
    ),
    Product("bluetooth speaker", "electronics", ("battery", "durability", "ease_of_use"), (25, 200)),
    Product("power bank", "electronics", ("battery", "durability"), (15, 80)),
    Product("smartwatch", "electronics", ("battery", "comfort", "durability", "ease_of_use"), (60, 400)),
    Product("e-reader", "electronics", ("battery", "durability", "ease_of_use"), (90, 250)),
    Product("noise-cancelling headphones", "electronics", ("battery", "comfort", "durability"), (50, 380)),
    Product("rain jacket", "clothing", ("size_fit", "comfort", "durability"), (40, 220), _LETTER_SIZES),
    Product("running shoes", "clothing", ("size_fit", "comfort", "durability"), (45, 180), _SHOE_SIZES),
    Product("hoodie", "clothing", ("size_fit", "comfort", "durability"), (25, 90), _LETTER_SIZES),
    Product("pair of jeans", "clothing", ("size_fit", "comfort", "durability"), (30, 120), _LETTER_SIZES),
    Product("hiking boots", "clothing", ("size_fit", "comfort", "durability"), (70, 260), _SHOE_SIZES),
    Product("winter coat", "clothing", ("size_fit", "comfort", "durability"), (80, 350), _LETTER_SIZES),
    Product("blender", "home_kitchen", ("durability", "ease_of_use"), (30, 200)),
    Product("air fryer", "home_kitchen", ("durability", "ease_of_use"), (50, 220)),
    Product("coffee grinder", "home_kitchen", ("durability", "ease_of_use"), (20, 150)),
    Product("chef's knife", "home_kitchen", ("durability", "ease_of_use"), (25, 160)),
    Product("non-stick pan", "home_kitchen", ("durability", "ease_of_use"), (20, 90)),
    Product("cordless vacuum", "home_kitchen", ("battery", "durability", "ease_of_use"), (90, 450)),
    Product("desk lamp", "home_kitchen", ("durability", "ease_of_use"), (15, 80)),
    Product("hair dryer", "beauty", ("durability", "ease_of_use"), (20, 300)),
    Product("electric toothbrush", "beauty", ("battery", "durability", "ease_of_use"), (25, 200)),
    Product("face moisturizer", "beauty", (), (8, 60)),
    Product("sunscreen", "beauty", (), (7, 35)),
    Product("shampoo", "beauty", (), (6, 40)),
    Product("yoga mat", "sports_outdoors", ("durability",), (15, 110)),
    Product("camping tent", "sports_outdoors", ("durability", "ease_of_use"), (60, 500)),
    Product("insulated water bottle", "sports_outdoors", ("durability",), (15, 50)),
    Product("bike light", "sports_outdoors", ("battery", "durability", "ease_of_use"), (12, 70)),
    Product(
        "hiking backpack",
        "sports_outdoors",
        ("comfort", "durability", "size_fit"),
        (40, 250),
        ("S", "M", "L"),
    ),
    Product(
        "cycling gloves", "sports_outdoors", ("size_fit", "comfort", "durability"), (15, 60), _LETTER_SIZES
    ),
    Product("board game", "toys_games", (), (15, 70)),
    Product("building blocks set", "toys_games", ("durability",), (20, 150)),
    Product("remote control car", "toys_games", ("battery", "durability", "ease_of_use"), (25, 120)),
    Product("jigsaw puzzle", "toys_games", (), (10, 40)),
)
PRODUCT_CATEGORIES = tuple(dict.fromkeys(p.category for p in PRODUCTS))
BRANDS = (
    "Anker & Co",
    "Northfield",
    "Brühl",
    "Kestrel",
    "Lumio",
    "Nørdik",
    "Vela",
    "Summitline",
    "Café Solé",
    "Orbita",
    "Trailhead",
    "Zenwise",
)
# Non-ASCII names a reviewer mentions ("bought it for my sister Zoë"); Faker's en_US names are ASCII.
NON_ASCII_NAMES = (
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
RELATIVES = ("sister", "brother", "wife", "husband", "son", "daughter", "mom", "dad", "partner", "friend")

# --- English phrase banks: {placeholders} come from the review's facts ---------------------------------

ASPECT_SENTENCES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "price": {
        "positive": (
            "For {price} it's a steal.",
            "Great value for the money.",
            "Honestly worth every penny of the {price} I paid.",
            "Much cheaper than the name brands and I don't feel like I'm missing anything.",
            "Got it on sale for {price}, which felt like a bargain.",
            "The price is very fair for what you get.",
        ),
        "negative": (
            "Way overpriced for what it is.",
            "At {price} I expected a lot more.",
            "Not worth the money, you can find better for half the price.",
            "The price went up to {price} a week after I ordered, which is ridiculous.",
            "Too expensive for what you get.",
        ),
        "neutral": (
            "The price is about what you'd expect for this kind of {noun}.",
            "I paid {price}, which seems to be the usual price.",
            "Not the cheapest, not the most expensive either.",
        ),
    },
    "quality": {
        "positive": (
            "The build quality is excellent.",
            "It feels really solid and well made.",
            "The quality is much better than I expected from {brand}.",
            "Premium materials, nothing about it feels flimsy.",
            "You can tell the quality is there as soon as you pick it up.",
        ),
        "negative": (
            "The quality is terrible, it feels cheaply made.",
            "Flimsy plastic, and the quality control is clearly lacking.",
            "Mine came with a scratch and a loose part, really poor quality.",
            "For a {brand} product the quality is disappointing.",
            "Cheap materials that feel like a toy.",
        ),
        "neutral": (
            "Quality is okay, nothing special.",
            "The build quality is average for a {noun}.",
            "It's decently made, about what you'd expect for the quality.",
        ),
    },
    "shipping": {
        "positive": (
            "Shipping was fast, it arrived in {fast_days} days.",
            "It arrived a day earlier than promised.",
            "Delivery was quick and the courier was friendly.",
            "It shipped the same day I ordered it.",
            "Fast shipping, no complaints there.",
        ),
        "negative": (
            "Shipping took almost {weeks} weeks.",
            "The package arrived {days} days late and the tracking never updated.",
            "Delivery was a mess, it was left at the wrong address.",
            "It arrived late and I had to chase the courier twice.",
            "Shipping was painfully slow.",
        ),
        "neutral": (
            "It arrived on the expected delivery date.",
            "Shipping took {days} days, which is normal.",
            "Standard shipping, nothing to report.",
        ),
    },
    "durability": {
        "positive": (
            "I've had it for {weeks} weeks of daily use and it's still going strong.",
            "Very durable, it survived a couple of drops without a scratch.",
            "Holding up really well after {months} months.",
            "Tough and durable, it has already outlived my previous {noun}.",
            "Feels like it will last for years.",
        ),
        "negative": (
            "It broke after just {weeks} weeks.",
            "Fell apart within a month of normal use.",
            "Stopped working after {days} days, clearly not built to last.",
            "Already showing wear and tear after a few weeks.",
            "A part broke off the second time I used it.",
        ),
        "neutral": (
            "Too early to say how durable it is.",
            "It has held up fine so far, but it's only been {days} days.",
        ),
    },
    "customer_service": {
        "positive": (
            "Customer service was great, they sent a replacement right away.",
            "The seller answered my question within an hour.",
            "I had a small issue and support sorted it out the same day.",
            "{brand} customer service was friendly and helpful.",
        ),
        "negative": (
            "Customer service never answered my emails.",
            "The seller refused to help and kept sending copy-paste replies.",
            "Support was useless, I was on hold for {minutes} minutes.",
            "I contacted the seller twice and still have no response.",
            "{brand} support told me it was my fault.",
        ),
        "neutral": (
            "I contacted customer service once with a question and got a standard reply.",
            "The seller sent a generic follow-up email asking for a review.",
        ),
    },
    "size_fit": {
        "positive": (
            "Fits perfectly, I ordered my usual size {size}.",
            "True to size and the fit is great.",
            "The size chart was accurate, a {size} fits just right.",
            "Great fit, not too tight and not too loose.",
        ),
        "negative": (
            "Runs very small, I had to send it back for a bigger size.",
            "I ordered a {size} and it fits like two sizes smaller.",
            "The fit is weird, too tight in some places and loose in others.",
            "Way too big, even though I followed the size chart.",
        ),
        "neutral": (
            "Size {size} fits as expected.",
            "The fit is normal, maybe slightly loose.",
        ),
    },
    "battery": {
        "positive": (
            "Battery life is amazing, easily {hours} hours on a charge.",
            "The battery lasts for days.",
            "It charges quickly and the battery holds up all week.",
        ),
        "negative": (
            "The battery barely lasts {short_hours} hours.",
            "Battery life is awful, I have to charge it every day.",
            "It won't hold a charge anymore after a few weeks.",
            "The battery drains even when it's switched off.",
        ),
        "neutral": (
            "Battery life is roughly what the listing says, around {hours} hours.",
            "The battery is fine, I charge it every couple of days.",
        ),
    },
    "ease_of_use": {
        "positive": (
            "Super easy to set up, it took five minutes.",
            "Very intuitive, I didn't even need the instructions.",
            "Easy to use and easy to clean.",
            "The controls are simple and make sense.",
        ),
        "negative": (
            "The instructions are useless and the setup took me an hour.",
            "Way too complicated to use for something this simple.",
            "The controls are confusing and I keep pressing the wrong button.",
            "Setup was a nightmare.",
        ),
        "neutral": (
            "Setup is straightforward, the instructions are basic.",
            "It takes a bit of getting used to, but it's not hard to use.",
        ),
    },
    "packaging": {
        "positive": (
            "Nicely packaged, it would make a good gift.",
            "The packaging was secure and everything arrived intact.",
            "Minimal plastic in the packaging, which I appreciate.",
        ),
        "negative": (
            "The box was crushed and the packaging was torn open.",
            "Way too much plastic packaging for such a small item.",
            "The packaging was damaged and the seal was broken.",
        ),
        "neutral": (
            "It came in a plain brown box.",
            "Standard packaging, nothing fancy.",
        ),
    },
    "comfort": {
        "positive": (
            "Really comfortable, I can wear it all day.",
            "Super comfortable and soft.",
            "So comfortable that I forget I have it on.",
        ),
        "negative": (
            "Uncomfortable after about twenty minutes.",
            "It hurts after an hour, really not comfortable.",
            "The material is scratchy and uncomfortable.",
        ),
        "neutral": (
            "Comfort is okay, not the best I've tried.",
            "Reasonably comfortable for short periods.",
        ),
    },
}
OPENERS: Mapping[str, tuple[str, ...]] = {
    "positive": (
        "Really happy with this {noun}.",
        "Love it!",
        "Bought this for my {relative} {name} and they love it.",
        "This is my second {noun} from {brand} and it didn't disappoint.",
        "Exactly what I was looking for.",
        "I was skeptical at first, but I'm impressed.",
    ),
    "negative": (
        "Very disappointed.",
        "Do not buy this.",
        "I wanted to like this {noun}, I really did.",
        "Save yourself the trouble.",
        "I regret this purchase.",
        "What a letdown.",
    ),
    "mixed": (
        "Mixed feelings about this one.",
        "There's good and bad here.",
        "It's fine, with a few caveats.",
        "I'm torn on this {noun}.",
        "Some things I like, some I don't.",
    ),
    "neutral": (
        "It's okay.",
        "Does what it says.",
        "An average {noun}.",
        "Bought it to replace my old {noun}.",
        "It's a {noun}. It works.",
    ),
}
CLOSERS: Mapping[str, tuple[str, ...]] = {
    "positive": (
        "Would definitely buy again.",
        "Highly recommend.",
        "Five stars from me.",
        "Already ordered another one for {name}.",
        "No regrets at all.",
    ),
    "negative": (
        "Returning it.",
        "Would not recommend.",
        "One star is generous.",
        "Look elsewhere.",
        "Never again.",
    ),
    "mixed": (
        "I'd maybe buy it again if it goes on sale.",
        "Not sure I'd buy it again.",
        "Keeping it for now.",
        "Could be great with a few fixes.",
    ),
    "neutral": (
        "Nothing special, nothing terrible.",
        "We'll see.",
        "It does the job.",
        "Neither impressed nor disappointed.",
    ),
}
# Context sentences long reviews tell before getting to the point; they touch no aspect.
STORY = (
    "I bought this before a trip to {city} in {month}.",
    "We've been using it almost every day since then.",
    "My {relative} {name} recommended it to me.",
    "I compared a few different brands before ordering this one.",
    "For context, I'm pretty picky about this kind of thing.",
    "I mostly use it on weekends.",
    "I read a lot of reviews before deciding, so here's mine.",
    "This replaced one I had for years.",
)
TO_NEGATIVE = ("But ", "However, ", "Unfortunately, ", "On the downside, ")
TO_POSITIVE = ("On the plus side, ", "That said, ", "Still, ", "But ")
# One short review: a phrase and the aspects it carries; only phrases whose aspects the product has are used.
SHORT: Mapping[str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = {
    "positive": (
        ("Love it", ()),
        ("Great {noun}", ()),
        ("Works perfectly", ()),
        ("Great value", (("price", "positive"),)),
        ("Fast shipping, great product", (("shipping", "positive"),)),
        ("Exactly as described", ()),
        ("Super comfy", (("comfort", "positive"),)),
        ("Battery lasts forever", (("battery", "positive"),)),
        ("Excellent quality", (("quality", "positive"),)),
    ),
    "negative": (
        ("Broke after two days", (("durability", "negative"),)),
        ("Waste of money", (("price", "negative"),)),
        ("Arrived with the box crushed", (("packaging", "negative"),)),
        ("Don't buy", ()),
        ("Terrible quality", (("quality", "negative"),)),
        (
            "Broke in a week, seller won't answer",
            (("durability", "negative"), ("customer_service", "negative")),
        ),
        ("Junk", ()),
    ),
    "mixed": (
        ("Good quality but overpriced", (("quality", "positive"), ("price", "negative"))),
        ("Comfy but runs small", (("comfort", "positive"), ("size_fit", "negative"))),
        ("Cheap and it shows, flimsy", (("price", "positive"), ("quality", "negative"))),
        ("Fast delivery, poor quality", (("shipping", "positive"), ("quality", "negative"))),
        ("Easy to use, battery is weak", (("ease_of_use", "positive"), ("battery", "negative"))),
    ),
    "neutral": (
        ("It's ok", ()),
        ("Does the job", ()),
        ("As described", ()),
        ("Fine for the price", (("price", "neutral"),)),
        ("Average", ()),
        ("Meh", ()),
    ),
}
TITLES: Mapping[str, tuple[str, ...]] = {
    "positive": (
        "Great {noun}",
        "Love it",
        "Exactly what I needed",
        "Five stars",
        "Very happy",
        "Better than expected",
        "Solid {noun} from {brand}",
        "Highly recommend",
    ),
    "negative": (
        "Disappointed",
        "Not worth it",
        "Do not buy",
        "Returned it",
        "Avoid this {noun}",
        "Big letdown",
    ),
    "mixed": ("Good but not great", "Almost perfect", "Some issues", "Pros and cons", "Could be better"),
    "neutral": ("It's okay", "Average", "Does the job", "As described", "Fine"),
}
EMOJI: Mapping[str, tuple[str, ...]] = {
    "positive": ("😍", "👍", "🙌", "⭐⭐⭐⭐⭐", "❤️"),
    "negative": ("😡", "👎", "🤬", "😞"),
    "mixed": ("🤷", "😐", "🤔"),
    "neutral": ("🙂", "😐"),
}
# Common misspellings; random letter swaps add the rest of the noise.
MISSPELLINGS = (
    ("received", "recieved"),
    ("definitely", "definately"),
    ("really", "realy"),
    ("because", "becuase"),
    ("until", "untill"),
    ("a lot", "alot"),
    ("it's", "its"),
    ("would have", "would of"),
    ("expected", "expexted"),
    ("disappointed", "dissapointed"),
)

# --- other languages: short texts over the three aspects every product has ------------------------------

FOREIGN: Mapping[str, Mapping[str, Any]] = {
    "de": {
        "openers": {
            "positive": ("Sehr zufrieden.", "Top Produkt!", "Klare Kaufempfehlung."),
            "negative": ("Leider enttäuscht.", "Nicht zu empfehlen.", "Finger weg!"),
            "mixed": ("Gemischte Gefühle.", "Geht so."),
            "neutral": ("Ganz okay.", "Erfüllt seinen Zweck.", "Nichts Besonderes."),
        },
        "aspects": {
            ("price", "positive"): ("Preis-Leistung stimmt.", "Für den Preis wirklich gut."),
            ("price", "negative"): ("Viel zu teuer.", "Den Preis nicht wert."),
            ("quality", "positive"): ("Die Qualität ist super.", "Sehr gute Verarbeitung."),
            ("quality", "negative"): ("Die Verarbeitung ist schlecht.", "Billige Qualität."),
            ("shipping", "positive"): ("Lieferung war schnell.", "Kam schon nach {days} Tagen an."),
            ("shipping", "negative"): ("Die Lieferung hat ewig gedauert.", "Paket kam {days} Tage zu spät."),
        },
        "titles": {
            "positive": ("Super", "Top"),
            "negative": ("Enttäuschend", "Schlecht"),
            "mixed": ("Gut, aber…", "Geht so"),
            "neutral": ("Okay", "Normal"),
        },
    },
    "es": {
        "openers": {
            "positive": ("Muy contento con la compra.", "¡Me encanta!", "Lo recomiendo."),
            "negative": ("Muy decepcionado.", "No lo recomiendo.", "Una pena."),
            "mixed": ("Tiene cosas buenas y malas.", "Regular."),
            "neutral": ("Está bien.", "Cumple su función.", "Nada especial."),
        },
        "aspects": {
            ("price", "positive"): ("Buena relación calidad-precio.", "Muy buen precio."),
            ("price", "negative"): ("Demasiado caro.", "No vale lo que cuesta."),
            ("quality", "positive"): ("La calidad es excelente.", "Muy bien hecho."),
            ("quality", "negative"): ("La calidad deja mucho que desear.", "Materiales de mala calidad."),
            ("shipping", "positive"): ("El envío fue rapidísimo.", "Llegó en {days} días."),
            ("shipping", "negative"): ("El envío tardó muchísimo.", "Llegó con {days} días de retraso."),
        },
        "titles": {
            "positive": ("Genial", "Perfecto"),
            "negative": ("Decepcionante", "Malo"),
            "mixed": ("Bien, pero…", "Regular"),
            "neutral": ("Normal", "Correcto"),
        },
    },
    "fr": {
        "openers": {
            "positive": ("Très satisfait.", "Produit génial !", "Je recommande."),
            "negative": ("Très déçu.", "À éviter.", "Je ne recommande pas."),
            "mixed": ("Avis partagé.", "Mitigé."),
            "neutral": ("Correct.", "Fait le travail.", "Rien de spécial."),
        },
        "aspects": {
            ("price", "positive"): ("Excellent rapport qualité-prix.", "Prix très raisonnable."),
            ("price", "negative"): ("Beaucoup trop cher.", "Ne vaut pas son prix."),
            ("quality", "positive"): ("La qualité est au rendez-vous.", "Très bien fini."),
            ("quality", "negative"): ("Qualité médiocre.", "Les finitions sont bâclées."),
            ("shipping", "positive"): ("Livraison rapide.", "Reçu en {days} jours."),
            ("shipping", "negative"): ("Livraison très lente.", "Colis arrivé avec {days} jours de retard."),
        },
        "titles": {
            "positive": ("Parfait", "Génial"),
            "negative": ("Décevant", "Nul"),
            "mixed": ("Bien mais…", "Mitigé"),
            "neutral": ("Correct", "Moyen"),
        },
    },
    "it": {
        "openers": {
            "positive": ("Molto soddisfatto.", "Ottimo prodotto!", "Lo consiglio."),
            "negative": ("Molto deluso.", "Sconsigliato.", "Da evitare."),
            "mixed": ("Pro e contro.", "Così così."),
            "neutral": ("Nella media.", "Fa il suo lavoro.", "Niente di speciale."),
        },
        "aspects": {
            ("price", "positive"): ("Ottimo rapporto qualità-prezzo.", "Prezzo onesto."),
            ("price", "negative"): ("Troppo caro.", "Non vale il prezzo."),
            ("quality", "positive"): ("Qualità eccellente.", "Ben costruito."),
            ("quality", "negative"): ("Qualità scadente.", "Materiali economici."),
            ("shipping", "positive"): ("Spedizione velocissima.", "Arrivato in {days} giorni."),
            ("shipping", "negative"): ("Spedizione lentissima.", "Arrivato con {days} giorni di ritardo."),
        },
        "titles": {
            "positive": ("Ottimo", "Perfetto"),
            "negative": ("Deludente", "Pessimo"),
            "mixed": ("Buono, ma…", "Così così"),
            "neutral": ("Normale", "Nella media"),
        },
    },
    "pt": {
        "openers": {
            "positive": ("Muito satisfeito.", "Adorei!", "Recomendo."),
            "negative": ("Muito decepcionado.", "Não recomendo.", "Péssimo."),
            "mixed": ("Tem prós e contras.", "Mais ou menos."),
            "neutral": ("Razoável.", "Cumpre o que promete.", "Nada de especial."),
        },
        "aspects": {
            ("price", "positive"): ("Ótimo custo-benefício.", "Preço justo."),
            ("price", "negative"): ("Caro demais.", "Não vale o preço."),
            ("quality", "positive"): ("Qualidade excelente.", "Muito bem feito."),
            ("quality", "negative"): ("Qualidade ruim.", "Material de baixa qualidade."),
            ("shipping", "positive"): ("Entrega rápida.", "Chegou em {days} dias."),
            ("shipping", "negative"): ("A entrega demorou muito.", "Chegou com {days} dias de atraso."),
        },
        "titles": {
            "positive": ("Ótimo", "Excelente"),
            "negative": ("Decepcionante", "Ruim"),
            "mixed": ("Bom, mas…", "Mais ou menos"),
            "neutral": ("Normal", "Razoável"),
        },
    },
}
_FOREIGN_ASPECTS = ("price", "quality", "shipping")


@dataclass(frozen=True)
class _Listing:
    product_id: str
    product: Product
    brand: str
    price: float


@lru_cache(maxsize=CATALOG_SIZE)
def _listing(seed: int, number: int) -> _Listing:
    """Product ``number`` of the seed's catalog: reviews of the same product share its id, brand and price."""
    rng = random.Random(f"{seed}:product:{number}")
    product = PRODUCTS[rng.randrange(len(PRODUCTS))]
    suffix = "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
    low, high = product.price_range
    price = round(rng.uniform(low, high)) - rng.choice((0.01, 0.01, 0.05, 0.0))
    return _Listing(f"B0{suffix}", product, rng.choice(BRANDS), max(price, 0.99))


def _facts(rng: random.Random, listing: _Listing) -> dict[str, str]:
    fake = _faker()
    fake.seed_instance(rng.getrandbits(64))
    name = rng.choice(NON_ASCII_NAMES) if rng.random() < 0.3 else fake.first_name()
    hours = rng.choice((8, 10, 12, 20, 24, 30, 40))
    return {
        "noun": listing.product.noun,
        "brand": listing.brand,
        "price": f"${listing.price:,.2f}",
        "days": str(rng.randint(3, 9)),
        "fast_days": str(rng.randint(1, 3)),
        "weeks": str(rng.randint(2, 6)),
        "months": str(rng.randint(2, 14)),
        "minutes": str(rng.choice((20, 30, 45, 50, 90))),
        "hours": str(hours),
        "short_hours": str(rng.randint(1, 3)),
        "size": rng.choice(listing.product.sizes) if listing.product.sizes else "M",
        "name": name,
        "relative": rng.choice(RELATIVES),
        "city": fake.city(),
        "month": fake.month_name(),
    }


def _connect(rng: random.Random, template: str, sentiment: str) -> str:
    """``template`` opened by a contrast word ("But the battery …") when the sentiment turns."""
    lead = rng.choice(TO_NEGATIVE if sentiment == "negative" else TO_POSITIVE)
    if template.startswith(("{", "I ", "I'")):
        return lead + template
    return lead + template[0].lower() + template[1:]


def _mentions(rng: random.Random, label: str, aspects: Sequence[str], count: int) -> list[AspectMention]:
    chosen = rng.sample(list(aspects), min(count, len(aspects)))
    if label == "neutral":
        return [AspectMention(a, "neutral") for a in chosen]
    if label in ("positive", "negative"):
        sentiments = [label] * len(chosen)
        if len(chosen) > 1 and rng.random() < 0.2:
            sentiments[-1] = "neutral"
        return [AspectMention(a, s) for a, s in zip(chosen, sentiments, strict=True)]
    # mixed: at least one positive and one negative aspect, grouped so the review turns once or twice
    sentiments = ["positive", "negative"] + [rng.choice(ASPECT_SENTIMENTS) for _ in chosen[2:]]
    mentions = [AspectMention(a, s) for a, s in zip(chosen, sentiments, strict=True)]
    first = rng.choice(("positive", "negative"))
    return sorted(mentions, key=lambda m: (m.sentiment != first, m.sentiment == "neutral"))


def _english(
    rng: random.Random, label: str, listing: _Listing, facts: Mapping[str, str]
) -> tuple[str, list[AspectMention]]:
    roll = rng.random()
    aspects = [*COMMON_ASPECTS, *listing.product.aspects]
    if roll < 0.08:
        return _short(rng, label, aspects, facts)
    long = roll > 0.94
    counts = {"positive": (1, 3), "negative": (1, 3), "mixed": (2, 4), "neutral": (0, 2)}[label]
    if long:
        counts = (3, 5) if label != "neutral" else (2, 3)
    mentions = _mentions(rng, label, aspects, rng.randint(*counts))
    # A review of one sentence is rare; most wrap their point in an opener, a closer or both.
    frame = rng.choice(("opener", "closer", "both")) if len(mentions) <= 1 else ""
    sentences: list[str] = []
    if long or frame in ("opener", "both") or rng.random() < 0.6:
        sentences.append(rng.choice(OPENERS[label]))
    if long:
        sentences += rng.sample(STORY, 2)
    elif not mentions and rng.random() < 0.6:
        sentences.append(rng.choice(STORY))
    previous = ""
    for mention in mentions:
        bank = ASPECT_SENTENCES[mention.aspect][mention.sentiment]
        for template in rng.sample(bank, 2 if long and rng.random() < 0.4 else 1):
            turns = {previous, mention.sentiment} == {"positive", "negative"}
            sentences.append(_connect(rng, template, mention.sentiment) if turns else template)
            previous = mention.sentiment
    if long or frame in ("closer", "both") or rng.random() < 0.45:
        sentences.append(rng.choice(CLOSERS[label]))
    filled = [s.format_map(facts) for s in sentences]
    if not long:
        return " ".join(filled), mentions
    cut = sorted(rng.sample(range(2, len(filled) - 1), 2))
    paragraphs = (filled[: cut[0]], filled[cut[0] : cut[1]], filled[cut[1] :])
    return "\n\n".join(" ".join(p) for p in paragraphs), mentions


def _short(
    rng: random.Random, label: str, aspects: Sequence[str], facts: Mapping[str, str]
) -> tuple[str, list[AspectMention]]:
    options = [(t, m) for t, m in SHORT[label] if all(a in aspects for a, _ in m)]
    template, carried = rng.choice(options)
    text = template.format_map(facts)
    style = rng.random()
    if style < 0.3:
        text = text.lower()
    elif style < 0.45:
        text = text.upper()
    text += rng.choice((".", "!", "!!!", "", "..", "!!"))
    return text, [AspectMention(a, s) for a, s in carried]


def _foreign(
    rng: random.Random, language: str, label: str, facts: Mapping[str, str]
) -> tuple[str, str, list[AspectMention]]:
    bank = FOREIGN[language]
    aspects = rng.sample(_FOREIGN_ASPECTS, 2)
    if label == "mixed":
        mentions = [AspectMention(aspects[0], "positive"), AspectMention(aspects[1], "negative")]
    elif label == "neutral":
        mentions = []
    else:
        mentions = [AspectMention(a, label) for a in aspects[: rng.randint(1, 2)]]
    sentences = [rng.choice(bank["openers"][label])] if not mentions or rng.random() < 0.7 else []
    sentences += [rng.choice(bank["aspects"][(m.aspect, m.sentiment)]) for m in mentions]
    text = " ".join(s.format_map(facts) for s in sentences)
    return text, rng.choice(bank["titles"][label]), mentions


def _typos(rng: random.Random, text: str) -> str:
    present = [(right, wrong) for right, wrong in MISSPELLINGS if right in text]
    if present and rng.random() < 0.6:
        right, wrong = rng.choice(present)
        return text.replace(right, wrong, 1)
    # A misspelt keyword would hide the aspect it names; those words stay intact.
    keywords = [k for words in ASPECT_KEYWORDS.values() for k in words]
    words = text.split(" ")
    candidates = [
        i
        for i, w in enumerate(words)
        if len(w) >= 6 and w.isalpha() and w.islower() and not any(k in w or w in k for k in keywords)
    ]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word, at = words[i], rng.randrange(1, len(words[i]) - 2)
    words[i] = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    return " ".join(words)


def make_review(seed: int, index: int) -> Review:
    """Review number ``index`` of ``seed``."""
    rng = random.Random(f"{seed}:review:{index}")
    listing = _listing(seed, int(CATALOG_SIZE * rng.random() ** 2))  # a few products get most reviews
    facts = _facts(rng, listing)
    label = rng.choices(REVIEW_LABELS, LABEL_WEIGHTS)[0]
    language = rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]
    if language == "en":
        text, mentions = _english(rng, label, listing, facts)
        title = rng.choice(TITLES[label]).format_map(facts)
        if rng.random() < 0.12:
            text = _typos(rng, text)
        if rng.random() < 0.04:
            title = title.upper()
    else:
        text, title, mentions = _foreign(rng, language, label, facts)
    if rng.random() < 0.1:
        text += " " + rng.choice(EMOJI[label])
    values, weights = RATINGS[label]
    return Review(
        review_id=f"review-{seed}-{index + 1:06d}",
        product_id=listing.product_id,
        product_category=listing.product.category,
        rating=rng.choices(values, weights)[0],
        title=title,
        review_text=text,
        language=language,
        created_at=_EPOCH + timedelta(seconds=rng.randrange(365 * 86_400)),
        truth=ReviewTruth(label, tuple(mentions)),
    )


def generate_reviews(n: int, seed: int = 0) -> Iterator[Review]:
    """``n`` synthetic reviews, the same ones for the same ``seed``, made one at a time."""
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    for index in range(n):
        yield make_review(seed, index)
