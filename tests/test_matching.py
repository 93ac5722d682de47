"""The per-row match: an answer matches only when it states the reference's facts (numbers, dates,
codes, names), whatever its wording; references without facts fall back to key words."""

from __future__ import annotations

import pytest

from evals.matching import facts_of, match, matches, matches_by_key_words, vocabulary

PRICE_Q = "How much is the Glasswren Mini?"
PRICE = "The Glasswren Mini is priced at $149."


@pytest.mark.parametrize("answer, expected", [
    ("The Glasswren Mini is priced at $49.", False),  # the wording matches, the number does not
    ("The Glasswren Mini is priced at $1,149.", False),
    ("The Glasswren Mini is priced at $149.99.", False),
    ("It costs 149 dollars.", True),
    ("USD 149", True),
    ("You would pay $149 for it.", True),
    ("It costs 149.", True),  # no unit on the answer's side: the value decides
    ("It costs €149.", False),  # another currency
    ("It weighs 149 kg.", False),
])
def test_a_price_matches_by_its_value_and_currency(answer, expected):
    assert matches(answer, PRICE, PRICE_Q) is expected
    # The rule the proof used before: half the key words ("priced", "149") -> "$49" passed it.
    if answer.startswith("The Glasswren Mini is priced at $49"):
        assert matches_by_key_words(answer, PRICE, PRICE_Q)


@pytest.mark.parametrize("answer, reference, expected", [
    ("It has twelve members.", "The band has 12 members.", True),
    ("It has 21 members.", "The band has twenty-one members.", True),
    ("About 15 per cent of them.", "Roughly 15% of them.", True),
    ("About 15 of them.", "Roughly 15% of them.", True),
    ("About 16 per cent.", "Roughly 15% of them.", False),
    ("It raised $1.2 million.", "It raised 1,200,000 dollars.", True),
    ("It weighs 2.5 kilograms.", "It weighs 2.5 kg.", True),
    ("It weighs 2.50 kg.", "It weighs 2.5 kg.", True),
    ("It weighs 25 kg.", "It weighs 2.5 kg.", False),
    ("Its staff numbers 17291.", "The workforce numbers 17,291.", True),
    ("Its staff numbers 1,729.", "The workforce numbers 17,291.", False),
])
def test_numbers_are_compared_by_value_with_units_normalized(answer, reference, expected):
    assert matches(answer, reference, "How many?") is expected


@pytest.mark.parametrize("answer, expected", [
    ("It opened on August 21, 1972.", True),
    ("It opened on the 21st of August, 1972.", True),
    ("It opened on 1972-08-21.", True),
    ("It opened on 21/08/1972.", True),
    ("It opened on 21 Aug 1972.", True),
    ("It opened on 21 August 1973.", False),
    ("It opened on 12 August 1972.", False),
    ("It opened in August 1972.", False),  # the day is part of the fact
    ("It opened in 1972.", False),
])
def test_a_date_matches_in_any_spelling_but_all_of_its_parts(answer, expected):
    assert matches(answer, "Ulven Audio opened on 21 August 1972.", "When did Ulven Audio open?") is expected


def test_a_year_is_a_number_and_found_inside_a_date():
    question = "When did the Tosdra Air come out?"
    assert matches("It came out in 2012.", "The Tosdra Air came out in 2012.", question)
    assert matches("It came out on March 3, 2012.", "The Tosdra Air came out in 2012.", question)
    assert not matches("It came out in 2013.", "The Tosdra Air came out in 2012.", question)


@pytest.mark.parametrize("answer, expected", [
    ("The model number is GZV-811.", True),
    ("The model number is gzv811.", True),
    ("The model number is GZV 811.", True),
    ("The model number is GZV-812.", False),
    ("The model number is 811.", False),
])
def test_a_code_matches_with_hyphens_and_spaces_ignored(answer, expected):
    assert matches(answer, "The model number of the Tosdra Air is GZV-811.", "What is the model number of the "
                   "Tosdra Air?") is expected


def test_names_must_all_be_there_in_any_case_and_the_question_does_not_count():
    question = "Who founded Ulven Audio?"
    reference = "Ulven Audio was founded by Quior Quiqui."
    assert facts_of(reference, question).names == {"quior", "quiqui"}
    assert matches("Quior Quiqui founded it.", reference, question)
    assert matches("it was quior quiqui", reference, question)
    assert not matches("Quior Vendra founded it.", reference, question)
    assert not matches("Ulven Audio was founded by Orla Ven.", reference, question)
    # The capital of an invented country: the name that answers is the fact.
    ref = "The capital of Veloria is Marnholt."
    assert not matches("The capital of Veloria is Paris.", ref, "What is the capital of Veloria?")
    assert matches("Marnholt, of course.", ref, "What is the capital of Veloria?")


def test_a_capitalized_word_opening_a_sentence_is_a_name_only_if_the_data_never_writes_it_lower_case():
    reference = "Teskel is the capital of Veloria."
    question = "What is the capital of Veloria?"
    assert facts_of(reference, question).names == {"teskel"}
    assert not matches("Marnholt is the capital of Veloria.", reference, question)
    priced = "Priced at $149, the Glasswren Mini came out in 2012."
    assert facts_of(priced, "Tell me about the Glasswren Mini.").describe() == ["2012", "149 usd"]
    sold = "Sold since 2012, it costs $149."
    assert facts_of(sold, "").names == {"sold"}  # nothing says "sold" is an ordinary word
    assert facts_of(sold, "", vocabulary(["It is sold in shops."])).names == frozenset()


def test_references_without_facts_fall_back_to_key_words_then_similarity():
    question = "What did Orla Ven do for a living?"
    reference = "Orla Ven was a glassblower."
    assert match("She was a glassblower.", reference, question).basis == "key words"
    assert matches("She was a glassblower.", reference, question)
    assert not matches("She was a weaver.", reference, question)
    echo = match("Orla Ven did.", "Orla Ven did.", "What did Orla Ven do?", similarity=0.9)
    assert echo.basis == "similarity" and echo.matched
    assert not matches("Orla Ven did.", "Orla Ven did.", "What did Orla Ven do?", similarity=0.5)


def test_the_question_facts_are_not_required_and_missing_facts_are_named():
    question = "Was the Tosdra Air released in 2012?"
    reference = "No, the Tosdra Air was released in 2014 by Quior Quiqui."
    result = match("No, it came out in 2015.", reference, question)
    assert not result.matched and result.missing == ("2014", "quior", "quiqui")
    assert matches("No: 2014, by Quior Quiqui.", reference, question)


def test_key_words_the_data_repeats_weigh_little_so_the_pattern_alone_does_not_match():
    creatures = {"orash": "cave lichen", "belbri": "copper beetles", "wennim": "reed seeds", "ventev": "ember berries"}
    texts = [t for name, food in creatures.items()
             for t in (f"How does the {name} get its food?", f"The {name} survives by eating {food}.")]
    vocab = vocabulary(texts)
    question, reference = "How does the orash get its food?", "The orash survives by eating cave lichen."
    wrong = "The orash survives by eating copper beetles."
    assert matches(wrong, reference, question)  # without the data, half of the key words is enough
    assert not matches(wrong, reference, question, vocab=vocab)
    assert matches("It eats cave lichen.", reference, question, vocab=vocab)
    assert matches(reference, reference, question, vocab=vocab)
    assert vocab.weight("survives") < vocab.weight("lichen") and vocab.weight("zzz") > vocab.weight("lichen")
    # A word every text holds still weighs something, and two vocabularies add up.
    assert vocab.weight("the") > 0 and (vocab | vocabulary(["The orash."])).texts == len(texts) + 1
