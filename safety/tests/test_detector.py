"""The crisis detector, pure: no database. Messages are written for these tests, not taken from any data set."""

import pytest

from safety.detector import (
    CRISIS_THRESHOLD,
    clauses_split,
    crisis_assess,
    crisis_bank_default,
    crisis_evaluate,
    text_normalise,
)


def flagged(*messages: str) -> bool:
    return crisis_assess(list(messages)).crisis


@pytest.mark.parametrize(
    "message",
    [
        "i want to kill myself",
        "i don't see the point in living anymore",
        "honestly i just want to die",
        "everyone would be better off without me",
        "i've been cutting myself again",
        "i wrote a note and i have a plan",
        "im going to end it all tonight",
        "i dont want to be alive anymore",
        "i'm suicidal",
        "kms",
    ],
)
def test_an_explicit_or_clear_crisis_is_flagged(message: str) -> None:
    # Given a message that says it plainly, when it is assessed, then it is a crisis
    assessment = crisis_assess([message])
    assert assessment.crisis is True
    assert assessment.score >= CRISIS_THRESHOLD
    assert assessment.matched  # explainable: what matched is named


def test_a_typo_still_matches_the_phrase_it_stands_for() -> None:
    assessment = crisis_assess(["i want to kil myslef"])

    assert assessment.crisis is True
    assert assessment.matched[0] == "kill myself"


@pytest.mark.parametrize(
    "message",
    [
        "this deadline is killing me",
        "i could kill for a pizza",
        "my mom will kill me if i'm late again",
        "i'm dying to see that movie",
        "lol i want to die, that was so embarrassing",
        "if i have to sit through one more meeting i will die",
        "i'm so stressed about exams",
        "i feel sad today, work was rough",
        "i'm exhausted and a bit down but i'll be ok",
        "good morning! what's on my calendar?",
    ],
)
def test_figures_of_speech_stress_and_ordinary_sadness_are_not_flagged(message: str) -> None:
    assert flagged(message) is False


@pytest.mark.parametrize(
    "message",
    [
        "i would never kill myself",
        "i'm not suicidal, just tired",
        "i'm not going to hurt myself, don't worry",
    ],
)
def test_a_negated_phrase_is_not_flagged(message: str) -> None:
    assessment = crisis_assess([message])

    assert assessment.crisis is False
    assert any("negation" in label for label in assessment.matched)


@pytest.mark.parametrize(
    "message",
    [
        "in my novel the main character kills herself in chapter three",
        "what if a character in the story wanted to end her life, how would the plot go",
        "my friend told me he wants to kill himself and i don't know what to say",
    ],
)
def test_fiction_hypotheticals_and_someone_else_are_not_the_users_crisis(message: str) -> None:
    assert flagged(message) is False


def test_the_past_tense_of_recovery_weighs_less_than_the_present() -> None:
    past = crisis_assess(["i used to self harm years ago but i'm doing much better now"])
    present = crisis_assess(["i self harm when it gets bad"])

    assert past.crisis is False
    assert present.crisis is True


def test_a_crisis_that_builds_over_several_messages_is_flagged_on_the_newest() -> None:
    # Given three messages, none a crisis alone
    messages = ["i'm so tired of everything", "honestly i hate myself", "i just feel hopeless"]
    assert [flagged(m) for m in messages] == [False, False, False]

    # When they are read together, oldest first
    assessment = crisis_assess(messages)

    # Then the build-up is a crisis, and the earlier messages are named among the matches
    assert assessment.crisis is True
    assert assessment.score > assessment.own_score
    assert {m.message_index for m in assessment.matches} == {0, 1, 2}


def test_a_calm_newest_message_is_not_flagged_by_an_earlier_crisis() -> None:
    assessment = crisis_assess(["i want to kill myself", "thank you, i called the line and i'm with my sister now"])

    assert assessment.crisis is False
    assert assessment.own_score == 0.0


def test_an_empty_conversation_is_calm() -> None:
    assert crisis_assess([]).crisis is False


def test_text_is_normalised_before_matching() -> None:
    assert text_normalise("I DON'T wanna") == "i do not want to"
    assert text_normalise("can't") == "can not"
    assert clauses_split("I'm fine. But I can't go on") == ["i am fine", "i can not go on"]


def test_the_bank_is_compiled_once_per_process() -> None:
    assert crisis_bank_default() is crisis_bank_default()
    assert len(crisis_bank_default().phrases) > 200


def test_the_evaluation_counts_recall_and_false_alarms() -> None:
    rows = [
        (["i want to kill myself"], True),
        (["i feel a bit sad"], True),  # missed
        (["this deadline is killing me"], False),
        (["i'm going to end it all"], False),  # a false alarm by its label
    ]

    result = crisis_evaluate(rows)

    assert (result.true_positive, result.false_negative, result.false_positive, result.true_negative) == (1, 1, 1, 1)
    assert (result.recall, result.false_positive_rate, result.precision) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "messages",
    [
        ["hey", "rough day again", "honestly i don't want to be here anymore"],
        ["i can't keep living like this"],
        ["i keep thinking about ending things"],
        ["i just want to go to sleep and not wake up"],
        ["i have the pills in front of me"],
        ["i'm scared of what i might do to myself"],
        ["nobody would even notice if i disappeared", "i think it's time"],
        ["i've been giving my stuff away", "i wrote goodbye letters to my family"],
        ["im thinking of jumping"],
    ],
)
def test_a_crisis_said_the_way_people_write_to_a_companion_is_flagged(messages: list[str]) -> None:
    assert flagged(*messages) is True


@pytest.mark.parametrize(
    "message",
    [
        "i'm exhausted, i can't do this homework anymore",
        "i want to disappear under a blanket all weekend",
        "can you remind me to take my pills at 8",
        "i failed my driving test, my life is over lol",
        "i'm so bored i could die",
        "goodbye for now, talk tomorrow!",
        "the plant is dying, what should i do",
    ],
)
def test_everyday_chat_that_sounds_dark_is_not_flagged(message: str) -> None:
    assert flagged(message) is False


@pytest.mark.parametrize("message", ["i have no reason to live", "there's no point in living", "i see no future"])
def test_a_negation_before_a_phrase_of_hope_is_the_crisis_not_its_denial(message: str) -> None:
    assessment = crisis_assess([message])

    assert all("negation" not in label for label in assessment.matched)
    assert assessment.score > 0.0


def test_words_said_to_the_user_are_not_the_users_crisis() -> None:
    assessment = crisis_assess(["some guy online told me to kill myself, people are awful"])

    assert assessment.crisis is False
    assert assessment.matched == ["kill myself (reported)"]


def test_someone_else_named_after_a_first_person_phrase_does_not_weigh_it_down() -> None:
    # "a friend" here is who the user called, not who is at risk
    assessment = crisis_assess(["i tried to kill myself last week and then called a friend"])

    assert assessment.crisis is True
    assert assessment.matched[0] == "kill myself"
