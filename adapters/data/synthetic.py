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


# ---- invented catalogs: numbers, years, dates, codes and names -----------------------------------

# attribute: (entity kind, fact kind, {wording set: (questions, answer templates)}); {v} is the value
ATTRIBUTES = {
    "price": ("product", "number", {
        "a": (("How much does {s} cost?", "What is the price of {s}?", "What does {s} sell for?",
               "How much is {s}?"),
              ("{S} costs {v}.", "{S} sells for {v}.", "The price of {s} is {v}.")),
        "b": (("What would I pay for {s}?", "What's {s} priced at?", "Tell me the retail price of {s}.",
               "How expensive is {s}?"),
              ("{S} is priced at {v}.", "{S} retails for {v}.", "You would pay {v} for {s}.")),
    }),
    "year": ("product", "year", {
        "a": (("When was {s} released?", "In what year did {s} come out?", "What year was {s} launched?",
               "When did {s} first go on sale?"),
              ("{S} was released in {v}.", "{S} came out in {v}.")),
        "b": (("Which year saw the launch of {s}?", "Tell me the release year of {s}.",
               "Since when has {s} been available?", "What is the launch year of {s}?"),
              ("{S} launched in {v}.", "{S} has been on sale since {v}.")),
    }),
    "code": ("product", "code", {
        "a": (("What is the model number of {s}?", "Which model code does {s} carry?",
               "What code identifies {s}?", "Under which model number is {s} sold?"),
              ("The model number of {s} is {v}.", "{S} carries the model code {v}.")),
        "b": (("Tell me the part number of {s}.", "What part code is printed on {s}?",
               "Which catalogue number does {s} have?", "What should I search for to order {s}?"),
              ("{S} has part number {v}.", "The catalogue number of {s} is {v}.")),
    }),
    "designer": ("product", "name", {
        "a": (("Who designed {s}?", "Who is the designer of {s}?", "Which designer created {s}?",
               "Whose studio designed {s}?"),
              ("{S} was designed by {v}.", "The designer of {s} is {v}.")),
        "b": (("Tell me who drew up {s}.", "Whose design is {s}?", "Who came up with the design of {s}?",
               "Which person is behind the look of {s}?"),
              ("The designer behind {s} is {v}.", "{S} is the work of {v}.")),
    }),
    "founded": ("company", "date", {
        "a": (("When was {s} founded?", "On what date was {s} established?", "What is the founding date of {s}?",
               "When did {s} begin trading?"),
              ("{S} was founded on {v}.", "{S} was established on {v}.")),
        "b": (("Tell me the day {s} started.", "Since which date has {s} existed?", "When did {s} open its doors?",
               "On which day did {s} come into being?"),
              ("{S} opened its doors on {v}.", "{S} started on {v}.")),
    }),
    "staff": ("company", "number", {
        "a": (("How many people work at {s}?", "How many employees does {s} have?",
               "What is the headcount of {s}?", "How big is the staff of {s}?"),
              ("{S} employs {v} people.", "{S} has {v} employees.")),
        "b": (("Tell me the size of the workforce at {s}.", "How large is the team at {s}?",
               "How many staff are on the payroll of {s}?", "What number of people does {s} employ?"),
              ("The workforce of {s} numbers {v}.", "There are {v} people on the payroll of {s}.")),
    }),
    "founder": ("company", "name", {
        "a": (("Who founded {s}?", "Who is the founder of {s}?", "Which person started {s}?",
               "Who set up {s}?"),
              ("{S} was founded by {v}.", "The founder of {s} is {v}.")),
        "b": (("Tell me who started {s}.", "Whose company is {s}?", "Who created {s} in the first place?",
               "Which entrepreneur launched {s}?"),
              ("{S} was started by {v}.", "{V} launched {s}.")),
    }),
    "city": ("company", "name", {
        "a": (("Where is {s} based?", "In which city is {s} headquartered?", "Where are the offices of {s}?",
               "What city is home to {s}?"),
              ("{S} is based in {v}.", "The headquarters of {s} are in {v}.")),
        "b": (("Tell me the home town of {s}.", "Which city does {s} operate from?",
               "Where would I visit the head office of {s}?", "From which city is {s} run?"),
              ("{S} operates from {v}.", "The head office of {s} is in {v}.")),
    }),
}
FACT_KINDS = {"number": ("price", "staff"), "year": ("year",), "date": ("founded",), "code": ("code",),
              "name": ("designer", "founder", "city")}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PRODUCT_KINDS = ("speaker", "turntable", "amplifier", "microphone", "keyboard", "radio", "synthesizer", "mixer")
MODEL_WORDS = ("Mini", "Pro", "Air", "Max", "Studio", "Lite", "Plus", "Neo", "Duo", "Arc")
COMPANY_WORDS = ("Audio", "Works", "Labs", "Instruments", "Acoustics", "Sound")


def _catalog_value(rng: random.Random, attribute: str, wording: str) -> str:
    if attribute == "price":
        return f"${rng.choice((rng.randrange(19, 200, 10), rng.randrange(199, 2500, 100))):,}"
    if attribute == "year":
        return str(rng.randint(1968, 2024))
    if attribute == "staff":
        return f"{rng.choice((rng.randint(12, 950), rng.randint(1000, 48000))):,}"
    if attribute == "code":
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTVWXZ") for _ in range(rng.choice((2, 3))))
        return f"{letters}-{rng.randint(100, 989)}"
    if attribute == "founded":
        year, month, day = rng.randint(1950, 2020), rng.randrange(12), rng.randint(1, 28)
        return f"{MONTHS[month]} {day}, {year}" if wording == "a" else f"{day} {MONTHS[month]} {year}"
    if attribute == "city":
        return _name(rng, rng.choice((2, 3)))
    return f"{_name(rng, 2)} {_name(rng, rng.choice((2, 3)))}"  # a person


def _catalog_subject(rng: random.Random, kind: str) -> str:
    if kind == "product":
        return f"the {_name(rng, rng.choice((2, 3)))} {rng.choice(MODEL_WORDS)} {rng.choice(PRODUCT_KINDS)}"
    return f"{_name(rng, rng.choice((2, 3)))} {rng.choice(COMPANY_WORDS)}"


def _catalog(seed: int, wording: str, entities: int, attributes) -> list[dict]:
    """Every fact of a catalog with all its question wordings in a seeded order."""
    if wording not in ("a", "b"):
        raise ValueError(f"wording {wording!r}: choose 'a' or 'b'")
    kinds = {ATTRIBUTES[a][0] for a in attributes}
    if len(kinds) != 1:
        raise ValueError(f"attributes {attributes}: all of one entity kind (product or company)")
    rng = random.Random(f"catalog:{seed}:{wording}")
    facts, seen = [], set()
    while len(seen) < entities:
        subject = _catalog_subject(rng, next(iter(kinds)))
        if subject.lower() in seen:
            continue
        seen.add(subject.lower())
        for attribute in attributes:
            _, kind, wordings = ATTRIBUTES[attribute]
            value = _catalog_value(rng, attribute, wording)
            questions, answers = wordings[wording]
            fill = dict(s=subject, S=subject[:1].upper() + subject[1:], v=value, V=value[:1].upper() + value[1:])
            answer = rng.choice(answers).format(**fill)
            asked = [q.format(**fill) for q in rng.sample(questions, len(questions))]
            facts.append({"fact_id": f"{attribute}-{len(seen):03d}", "attribute": attribute, "kind": kind,
                          "value": value, "answer": answer, "questions": asked})
    return facts


def invented_catalog(seed: int, wording: str = "a", entities: int = 16, attributes=("price", "year"),
                     ways: int = 3) -> list[dict]:
    """Rows about `entities` invented products or companies, each with every attribute in
    `attributes` (see ATTRIBUTES: prices and staff counts, years, dates, codes, people and cities),
    each fact asked `ways` ways (at most 3, so one wording is left for `catalog_probes`) in wording
    set `wording`. A row's `kind` says what the fact is (number, year, date, code, name);
    `answer_key` is the value as the answer writes it."""
    if not 1 <= ways <= 3:
        raise ValueError(f"ways={ways}: between 1 and 3")
    rows = []
    for fact in _catalog(seed, wording, entities, attributes):
        for question in fact["questions"][:ways]:
            rows.append({"question": question, "answer": fact["answer"], "answer_key": fact["value"],
                         "kind": fact["kind"], "category": fact["attribute"], "fact_id": fact["fact_id"],
                         "id": f"{fact['fact_id']}-{len(rows) + 1:04d}"})
    return rows


def catalog_probes(seed: int, wording: str = "a", entities: int = 16, attributes=("price", "year")) -> list[dict]:
    """For every fact of the same catalog, the one wording `invented_catalog` never uses: a question
    no training row and no held-out row asks that way, with its reference and answer key."""
    return [{"question": f["questions"][-1], "answer": f["answer"], "answer_key": f["value"], "kind": f["kind"],
             "fact_id": f["fact_id"]} for f in _catalog(seed, wording, entities, attributes)]
