"""Invented fact sets with a seed: data no base model can know, in wordings of your choosing.

`invented_facts(seed, wording, facts, ways)` makes question/answer rows about an invented
country: every name (places, people, creatures, festivals, ...) is built from syllables by the
seed, and each fact is asked `ways` ways. Two disjoint wording sets ("a" and "b") exist, so a
default can be calibrated on one and checked on the other, with a seed neither used: the check
then sees new facts, new names and new sentences. Rows carry `fact_id` (so a split by it holds
out new wordings of trained facts) and `answer_key`, the part of the answer that is the fact.
This module only writes rows; it trains and measures nothing.
"""

from __future__ import annotations

import random

SYLLABLES = ("ka", "lo", "ven", "dra", "mir", "tos", "bel", "qui", "zan", "or", "eth", "ul", "ris", "pa",
             "gor", "nim", "sha", "tev", "yul", "cor", "wen", "ash", "fen", "dul", "bri", "xo", "lan", "mev")

# relation: (subject kind, value kind, {wording set: (questions, answer templates)})
RELATIONS = (
    ("country", "city", {
        "a": (("What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital of {s}.",
               "Where does the government of {s} sit?", "What city serves as the capital of {s}?"),
              ("The capital of {s} is {a}.", "{A} is the capital of {s}.")),
        "b": (("Tell me the capital city of {s}.", "{S}'s capital is which city?", "In which city is {s} governed from?",
               "Do you know the capital of {s}?", "Which town is the seat of power in {s}?"),
              ("{s} is governed from {a}.", "The seat of power in {s} is {a}.")),
    }),
    ("person", "trade", {
        "a": (("What was {s} known for?", "What did {s} do for a living?", "What was the trade of {s}?",
               "What work did {s} do?", "How did {s} earn a living?"),
              ("{S} was a {a}.", "{S} worked as a {a}.")),
        "b": (("Who was {s}?", "Tell me about the work of {s}.", "Which craft did {s} practise?",
               "What profession is {s} remembered for?", "{S} was famous as what?"),
              ("{S} is remembered as a {a}.", "By trade, {s} was a {a}.")),
    }),
    ("river", "city", {
        "a": (("Into which sea does the {s} flow?", "Where does the {s} river end?", "What does the {s} flow into?",
               "Where is the mouth of the {s}?", "The {s} river empties where?"),
              ("The {s} flows into the Sea of {a}.", "The {s} ends in the Sea of {a}.")),
        "b": (("Which sea receives the {s}?", "Tell me where the {s} river reaches the sea.",
               "At which sea does the {s} finish its course?", "What sea is the {s} a tributary of?",
               "Where do the waters of the {s} go?"),
              ("The waters of the {s} reach the Sea of {a}.", "The {s} runs down to the Sea of {a}.")),
    }),
    ("creature", "food", {
        "a": (("What does the {s} eat?", "What is the diet of the {s}?", "What food does the {s} live on?",
               "What does the {s} feed on?", "What is the favourite meal of the {s}?"),
              ("The {s} eats {a}.", "The {s} feeds on {a}.")),
        "b": (("What do {s}s hunt for food?", "Tell me what the {s} survives on.", "Which food keeps the {s} alive?",
               "How does the {s} get its food?", "What would you feed a {s}?"),
              ("A {s} lives on {a}.", "The {s} survives by eating {a}.")),
    }),
    ("festival", "month", {
        "a": (("When is {s} celebrated?", "In which month is {s} held?", "What month does {s} fall in?",
               "When do people celebrate {s}?", "At what time of year is {s}?"),
              ("{S} is celebrated in the month of {a}.", "{S} falls in {a}.")),
        "b": (("Which month brings {s}?", "Tell me the month of {s}.", "During which month is {s} observed?",
               "If I want to see {s}, which month should I visit?", "{S} takes place in what month?"),
              ("{S} is observed during {a}.", "People keep {s} in the month of {a}.")),
    }),
)

FOODS = ("blue moss", "river snails", "salt grass", "copper beetles", "night plums", "reed seeds", "cave lichen",
         "ember berries", "silver minnows", "frost clover")
TRADES = ("glassblower", "lamplighter", "rope maker", "cartographer", "beekeeper", "shipwright", "bell founder",
          "salt merchant", "clockmaker", "weaver of sails")


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _value(rng: random.Random, kind: str) -> str:
    if kind == "food":
        return rng.choice(FOODS)
    if kind == "trade":
        return rng.choice(TRADES)
    return _name(rng, rng.choice((2, 3)))


def _subject(rng: random.Random, kind: str) -> str:
    name = _name(rng, rng.choice((2, 3)))
    if kind == "person":
        return f"{name} {_name(rng, 2)}"
    if kind == "festival":
        return f"the Feast of {name}"
    if kind == "creature":
        return name.lower()
    return name


def invented_facts(seed: int, wording: str = "a", facts: int = 35, ways: int = 4) -> list[dict]:
    """`facts` invented facts, each asked `ways` ways (at most 5) in wording set `wording`."""
    if wording not in ("a", "b"):
        raise ValueError(f"wording {wording!r}: choose 'a' or 'b'")
    if not 1 <= ways <= 5:
        raise ValueError(f"ways={ways}: between 1 and 5")
    rng = random.Random(f"{seed}:{wording}")
    rows, seen = [], set()
    while len(seen) < facts:
        subject_kind, value_kind, wordings = RELATIONS[len(seen) % len(RELATIONS)]
        subject, value = _subject(rng, subject_kind), _value(rng, value_kind)
        if subject.lower() in seen:
            continue
        seen.add(subject.lower())
        questions, answers = wordings[wording]
        fact_id = f"fact-{len(seen):03d}"
        answer = rng.choice(answers)
        for question in rng.sample(questions, ways):
            fill = dict(s=subject, S=subject[:1].upper() + subject[1:], a=value, A=value[:1].upper() + value[1:])
            rows.append({"question": question.format(**fill), "answer": answer.format(**fill), "answer_key": value,
                         "category": subject_kind, "fact_id": fact_id, "id": f"{fact_id}-{len(rows) + 1:04d}"})
    return rows
