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


# --- by screening theme: a wish to be dead, thoughts, method, intent, plan, preparation -------------


@pytest.mark.parametrize(
    "messages",
    [
        # a wish to be dead, passive
        ["i wish i could just not wake up tomorrow"],
        ["sometimes i hope i die in my sleep"],
        ["honestly i don't care if i die"],
        ["i keep wishing something would happen to me so it would all stop"],
        ["i hope i get hit by a bus on the way home, seriously"],
        # active thoughts, in other words
        ["i want to end everything"],
        ["i think about offing myself every day"],
        # method
        ["i've been stockpiling my meds for a few weeks"],
        ["i keep thinking about driving my car into a wall"],
        # self-harm urges
        ["the urge to cut is so strong tonight"],
        ["i want to cut again"],
        # burden
        ["i think everyone would be better off if i wasn't around"],
        ["my family would be better off", "i'm just a weight on them"],
        ["i just want to stop being a burden to everyone"],
        # doubt is not denial
        ["i don't know how much longer i can do this"],
        ["no idea if i can go on like this"],
        # farewell and timing: each needs company, which the conversation gives
        ["i won't be around much longer"],
        ["i'm so tired of everything", "tonight is the night"],
        ["i've made up my mind", "i know how i'm going to do it"],
        ["i've written the letters", "i'm sorry for everything"],
        ["i've put my affairs in order", "found a home for my cat"],
        ["what's even the point anymore", "nobody will miss me"],
    ],
)
def test_each_screening_theme_is_flagged_in_everyday_words(messages: list[str]) -> None:
    assert flagged(*messages) is True


@pytest.mark.parametrize(
    "message",
    [
        "my last day at work is friday, so excited",
        "we set the date for the wedding!",
        "i almost got hit by a car today, scary",
        "i took all my meds this morning like the doctor said",
        "honestly i'm better off without him",
        "i really let myself go this winter, time for the gym",
        "can you leave a note for me to buy milk",
        "i made up my mind, i'm buying the blue one",
        "tonight is the night! prom!!",
        "i'm going to do it, i'm asking her out",
        "that exam was sh*t",
        "it was a turning point in my life",
        "i relapsed and had a drink last night, annoyed at myself",
        "i can't even wake up without coffee",
        "my grandma wrote her will last year",
        "i gave away my old clothes to charity",
        "i crashed my car into a pole, insurance is a nightmare",
        "we walked into the ocean at sunset, it was freezing",
        "my uncle keeps a shotgun for hunting",
        "we've been stockpiling snacks for the movie night",
        "is there any point buying the pro version?",
        "i'm reading a novel where the hero writes a note and leaves",
        "i'm so embarrassed i want to die bruh",
        "sorry for everything i said yesterday, i was tired",
    ],
)
def test_the_everyday_sense_of_the_same_words_is_not_flagged(message: str) -> None:
    assert flagged(message) is False


@pytest.mark.parametrize(
    "messages",
    [
        # a timing or a farewell alone, with nothing before it, is not yet a crisis
        ["tonight is the night"],
        ["i picked a date", "it's next friday"],
    ],
)
def test_an_ambiguous_intent_alone_waits_for_company(messages: list[str]) -> None:
    assessment = crisis_assess(messages)

    assert assessment.crisis is False
    assert assessment.matched  # it is seen, and counts once another signal comes


def test_doubt_before_a_phrase_is_not_read_as_its_denial() -> None:
    doubt = crisis_assess(["i really do not know how much longer i can do this"])
    denial = crisis_assess(["i would never kill myself"])

    assert all("negation" not in label for label in doubt.matched)
    assert any("negation" in label for label in denial.matched)


def test_a_sentence_run_into_the_next_without_punctuation_is_split_there() -> None:
    assert clauses_split("Lost all hopeI don't know") == ["lost all hope", "i do not know"]
    assert clauses_split("i want to dieMy mom") == ["i want to die", "my mom"]


def test_a_censored_swear_word_is_not_read_as_chat_shorthand() -> None:
    # "sh" alone is chat for self harm; "sh*t" is not
    assert clauses_split("that was sh*t honestly") == ["that was honestly"]
    assert crisis_assess(["that was sh*t honestly"]).matched == []


def test_the_same_words_matched_by_two_phrases_count_once() -> None:
    # "i give up" and "giving up" match the same words after stemming: one signal, not two
    assessment = crisis_assess(["i might give up"])

    assert assessment.own_score == pytest.approx(max(m.weight for m in assessment.matches))
