"""Support tickets, generated deterministically from a seed: ticket text -> intent.

A help desk's tickets over time. Each ticket is a short message built from phrases of its
intent, a product name, a channel and some small talk, so words are shared between
intents and the labels are not a keyword lookup. From row ``change_at`` on the stream
changes as such streams do: **new product names** appear (words no tokenizer saw before)
and **a new intent**, ``cancel``, takes a share of the tickets. A text classifier trained
before the change goes stale; one fine-tuned after it learns the new intent.

:func:`pretraining_text` is the plain text a tiny base language model is pre-trained on
(the ticket vocabulary before the change, with no labels), so tests and the demo have a
base to fine-tune that nothing downloads.

>>> rows = make_support_tickets(200, seed=1, change_at=100)
>>> sorted(rows["intent"].unique())
['billing', 'cancel', 'login', 'refund', 'shipping']
>>> "cancel" in set(rows["intent"][:100])
False
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evertrain.data.timeline import LABEL_DELAY_SECONDS, START_EPOCH, STEP_SECONDS

INTENTS = ("billing", "login", "shipping", "refund")
#: The intent that appears at the change.
NEW_INTENT = "cancel"
PRODUCTS = ("Nimbus", "Atlas", "Orion", "Vega", "Lumen")
#: Product names that appear at the change (new words for an old tokenizer).
NEW_PRODUCTS = ("Zephyrix", "Quasarro", "Kestrelle")
CHANNELS = ("email", "chat", "phone")

_PHRASES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice this month",
        "my invoice shows the wrong amount",
        "why is there an extra fee on my bill",
        "the payment failed but money left my account",
        "please update the card on my account",
        "my bill went up without notice",
    ),
    "login": (
        "I cannot log in to my account",
        "the password reset email never arrives",
        "my account is locked after too many attempts",
        "two factor code is not accepted",
        "the app keeps logging me out",
        "I forgot my username",
    ),
    "shipping": (
        "my order has not arrived yet",
        "the tracking number does not work",
        "the parcel was delivered to the wrong address",
        "when will my package ship",
        "the courier says the order is lost",
        "delivery is two weeks late",
    ),
    "refund": (
        "I want my money back for this order",
        "the item arrived broken and I need a refund",
        "how long does a refund take",
        "I returned the product but got no refund",
        "please refund the damaged item",
        "the refund amount is wrong",
    ),
    NEW_INTENT: (
        "please cancel my subscription",
        "I want to close my account for good",
        "stop the monthly plan and cancel it",
        "how do I end my membership",
        "cancel the renewal before it charges me",
        "I no longer need the service, cancel it",
    ),
}
_OPENERS = ("hello", "hi team", "good morning", "dear support", "hey", "")
_CLOSERS = ("thanks", "thank you", "please help", "regards", "this is urgent", "")
_TOPICS = ("about my {p}", "with the {p} I bought", "for my {p} order", "on the {p} plan", "")


def _ticket(rng: np.random.Generator, intent: str, product: str, noise: float) -> str:
    phrase = str(rng.choice(_PHRASES[intent]))
    if rng.random() < noise:  # a ticket that also mentions another issue in passing
        other = str(rng.choice([i for i in INTENTS if i != intent]))
        phrase = f"{phrase}, also {rng.choice(_PHRASES[other])}"
    topic = str(rng.choice(_TOPICS)).format(p=product)
    parts = [str(rng.choice(_OPENERS)), f"{phrase} {topic}".strip(), str(rng.choice(_CLOSERS))]
    return ". ".join(p for p in parts if p)


def make_support_tickets(
    n_rows: int,
    *,
    seed: int = 0,
    change_at: int | None = None,
    new_intent_share: float = 0.25,
    new_product_share: float = 0.6,
    noise: float = 0.15,
    start: float = START_EPOCH,
    label_delay: float = LABEL_DELAY_SECONDS,
) -> pd.DataFrame:
    """``n_rows`` tickets (``ts``, ``label_ts``, ``channel``, ``text``, ``intent``), one a minute.

    From ``change_at`` on, ``new_intent_share`` of the tickets are ``cancel`` tickets and
    ``new_product_share`` name a product that did not exist before.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    rng = np.random.default_rng(seed)
    ts = start + STEP_SECONDS * np.arange(n_rows, dtype=float)
    label_ts = ts + label_delay * rng.uniform(0.5, 1.5, size=n_rows)
    after = np.arange(n_rows) >= (n_rows if change_at is None else change_at)
    texts, intents = [], []
    for changed in after:
        new = changed and rng.random() < new_intent_share
        intent = NEW_INTENT if new else str(rng.choice(INTENTS))
        pool = NEW_PRODUCTS if changed and rng.random() < new_product_share else PRODUCTS
        texts.append(_ticket(rng, intent, str(rng.choice(pool)), noise))
        intents.append(intent)
    return pd.DataFrame(
        {
            "ts": ts,
            "label_ts": label_ts,
            "channel": rng.choice(CHANNELS, size=n_rows),
            "text": texts,
            "intent": intents,
        }
    )


def pretraining_text(n_lines: int = 2000, *, seed: int = 0) -> list[str]:
    """Unlabelled ticket-like lines from before the change, for pre-training a tiny base model."""
    return list(make_support_tickets(n_lines, seed=seed, noise=0.3)["text"])


#: The desk a ticket of each intent is routed to: what a generator fine-tuned on the tickets answers.
DESKS = {
    "billing": "billing desk",
    "login": "account desk",
    "shipping": "delivery desk",
    "refund": "refund desk",
    NEW_INTENT: "retention desk",
}


def make_ticket_replies(n_rows: int, *, seed: int = 0, change_at: int | None = None) -> pd.DataFrame:
    """Prompt/response pairs (``ts``, ``label_ts``, ``prompt``, ``response``) for a causal language
    model: each support ticket of :func:`make_support_tickets` and the reply routing it,
    ``"route to the <desk> (<product>)"``, naming the product the ticket is about.

    >>> make_ticket_replies(1, seed=2)["response"][0]
    'route to the billing desk (Atlas)'
    """
    tickets = make_support_tickets(n_rows, seed=seed, change_at=change_at)
    products = (*PRODUCTS, *NEW_PRODUCTS)
    named = [next((p for p in products if p in text), "") for text in tickets["text"]]
    replies = [
        f"route to the {DESKS[intent]} ({product})" if product else f"route to the {DESKS[intent]}"
        for intent, product in zip(tickets["intent"], named, strict=True)
    ]
    return pd.DataFrame(
        {"ts": tickets["ts"], "label_ts": tickets["label_ts"], "prompt": tickets["text"], "response": replies}
    )
