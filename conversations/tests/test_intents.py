"""The mode router: pure, no database. Messages here are written for the tests, not eval rows."""

import pytest

from conversations.intents import (
    NEUTRAL,
    IntentMatch,
    PhraseBank,
    RouteDecision,
    RouterSettings,
    intent_evaluate,
    intent_match,
    phrase_bank_default,
    phrase_bank_for_avatar,
    route_message,
    text_normalise,
)
from core.modes import Mode

DEFAULTS = RouterSettings()


@pytest.fixture(scope="module")
def bank() -> PhraseBank:
    return phrase_bank_default()


def route(
    text: str,
    bank: PhraseBank,
    *,
    current: str = Mode.SECRETARY,
    locked: bool = False,
    block: str | None = None,
    settings: RouterSettings = DEFAULTS,
) -> RouteDecision:
    return route_message(text, current_mode=current, locked=locked, bank=bank, intimate_block=block, settings=settings)


# --- what a message points to ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "matched"),
    [
        ("can you remind me to call the dentist tomorrow", Mode.SECRETARY, "remind"),
        ("hey, can you add eggs to my shopping list", Mode.SECRETARY, "shopping list"),
        ("what's on my calendar tomorrow", Mode.SECRETARY, "what's on my calendar tomorrow"),
        ("remnd me to buy milk", Mode.SECRETARY, "remind"),  # a typo of a cue word is corrected
        ("i feel so lonely tonight", Mode.INTIMATE, "i feel so lonely"),
        ("do you secretly love me", Mode.INTIMATE, "do you secretly love me"),
        ("i had a rough day", Mode.INTIMATE, "i had a rough day"),
        ("I'm SO lonely!!! 😢", Mode.INTIMATE, "i'm so lonely"),
        ("what's the capital of peru", None, "capital"),
        ("thanks a million", None, "thanks a million"),
        ("tell me a joke", None, "tell me a joke"),
        ("which company owns you", None, "which company owns you"),
    ],
)
def test_intent_match_points_to_the_mode_and_names_what_matched(
    bank: PhraseBank, text: str, mode: str | None, matched: str
) -> None:
    # When
    match = intent_match(text, bank=bank, settings=DEFAULTS)

    # Then: the mode, the phrase or cue behind it, and a score on the 0-100 scale
    assert (match.mode, match.matched) == (mode, matched)
    assert 0.0 <= match.score <= 100.0
    if mode is not None:
        assert match.score >= DEFAULTS.point_threshold
        assert match.score == match.scores[mode]
        assert match.score >= match.scores[NEUTRAL] + DEFAULTS.neutral_margin
    else:
        assert match.score == match.scores[NEUTRAL]


def test_an_exact_bank_phrase_scores_100(bank: PhraseBank) -> None:
    match = intent_match("i love you so much", bank=bank, settings=DEFAULTS)

    assert match == IntentMatch(mode=Mode.INTIMATE, score=100.0, matched="i love you so much")
    assert match.scores[Mode.INTIMATE] == 100.0


@pytest.mark.parametrize("text", ["ok", "thanks", "yes", "lol", "😂😂", "👍", "ok thanks!", "   "])
def test_content_free_messages_point_nowhere(bank: PhraseBank, text: str) -> None:
    match = intent_match(text, bank=bank, settings=DEFAULTS)

    assert match.content_free is True
    assert (match.mode, match.score, match.matched) == (None, 0.0, None)


def test_text_normalise_expands_contractions_and_drops_punctuation() -> None:
    assert text_normalise("I'm SO lonely!!! 😢") == "i am so lonely"
    assert text_normalise("Don't  forget: e-mail Ann\u2019s boss @ 3pm") == "do not forget email ann boss 3 pm"
    assert text_normalise("I'd like you to add eggs") == "you please add eggs"


def test_a_long_message_is_routed_on_its_opening_and_closing_words(bank: PhraseBank) -> None:
    # Given a long ramble whose request comes at the very end
    ramble = "so the thing about the garden is that the roses grew back again " * 60
    text = ramble + "anyway, can you remind me to call the vet"
    assert len(text) > 3000

    # Then the request still routes, and a maximal message is handled like any other
    assert intent_match(text, bank=bank, settings=DEFAULTS).mode == Mode.SECRETARY
    assert intent_match("x" * 8000, bank=bank, settings=DEFAULTS).mode is None


def test_the_bank_is_normalised_once_and_cached(bank: PhraseBank) -> None:
    # Given the default bank, built from the packaged phrase files
    # Then it is the same object on every call, and its choices are stored already normalised
    assert phrase_bank_default() is bank
    assert phrase_bank_for_avatar(()) is bank
    for label in (Mode.SECRETARY, Mode.INTIMATE, NEUTRAL):
        assert len(bank.choices[label]) >= 200
        assert all(choice == text_normalise(choice) for choice in bank.choices[label])


def test_the_phrase_data_is_consistent(bank: PhraseBank) -> None:
    # No phrase in two banks, no two cues of one label that match the same words, weights 0-100
    owners: dict[str, str] = {}
    for label in (Mode.SECRETARY, Mode.INTIMATE, NEUTRAL):
        for choice in bank.choices[label]:
            assert owners.setdefault(choice, label) == label, f"{choice!r} is in {owners[choice]} and {label}"
    shapes = [(cue.label, cue.steps, cue.anchored) for cue in bank.cues]
    assert len(shapes) == len(set(shapes))
    assert all(0 < cue.weight <= 100 for cue in bank.cues)
    # and no command is an everyday message that already points to a mode
    assert [phrase for _, phrase in bank.commands if intent_match(phrase, bank=bank, settings=DEFAULTS).mode] == [
        "just be my friend"
    ]


# --- switching and hysteresis ----------------------------------------------------------------


def test_a_clear_message_switches_mode(bank: PhraseBank) -> None:
    decision = route("i feel so lonely tonight", bank)

    assert decision == RouteDecision(
        mode=Mode.INTIMATE,
        previous=Mode.SECRETARY,
        pointed=Mode.INTIMATE,
        score=95.5,
        matched="i feel so lonely",
        switch=True,
        source="intent",
        lock=None,
        blocked=None,
        blocked_reason=None,
    )


def test_a_neutral_message_keeps_the_mode(bank: PhraseBank) -> None:
    decision = route("what's the capital of peru", bank, current=Mode.INTIMATE)

    assert (decision.mode, decision.previous, decision.switch) == (Mode.INTIMATE, Mode.INTIMATE, False)
    assert (decision.pointed, decision.source, decision.lock) == (None, "none", None)


def test_a_message_for_the_current_mode_does_not_switch(bank: PhraseBank) -> None:
    decision = route("start a timer for the pasta", bank)

    assert (decision.mode, decision.pointed, decision.switch, decision.source) == (
        Mode.SECRETARY,
        Mode.SECRETARY,
        False,
        "intent",
    )


def test_hysteresis_a_mixed_message_does_not_pull_away_from_the_current_mode(bank: PhraseBank) -> None:
    # Given a message that leans intimate but is nearly as much about work
    text = "i'm so stressed about my meeting tomorrow"
    match = intent_match(text, bank=bank, settings=DEFAULTS)
    assert match.mode == Mode.INTIMATE
    assert match.score - match.scores[Mode.SECRETARY] < DEFAULTS.switch_margin

    # When it arrives in secretary mode, then the conversation stays there; from intimate it stays too
    assert route(text, bank).mode == Mode.SECRETARY
    assert route(text, bank, current=Mode.INTIMATE).mode == Mode.INTIMATE


def test_hysteresis_the_margin_over_the_current_mode_decides(bank: PhraseBank) -> None:
    # Given a message pointing to intimate and its lead over secretary
    text = "i had a rough day"
    match = intent_match(text, bank=bank, settings=DEFAULTS)
    lead = match.score - match.scores[Mode.SECRETARY]

    # When the margin is just above the lead, then no switch; just below it, a switch
    assert route(text, bank, settings=RouterSettings(switch_margin=lead + 0.1)).switch is False
    assert route(text, bank, settings=RouterSettings(switch_margin=lead - 0.1)).switch is True


def test_hysteresis_the_switch_threshold_decides(bank: PhraseBank) -> None:
    text = "i had a rough day"
    score = intent_match(text, bank=bank, settings=DEFAULTS).score

    assert route(text, bank, settings=RouterSettings(switch_threshold=score + 0.1)).switch is False
    assert route(text, bank, settings=RouterSettings(switch_threshold=score)).switch is True


@pytest.mark.parametrize("text", ["ok", "thanks", "yes", "lol", "😂", "haha ok", "sad", "hug"])
@pytest.mark.parametrize("current", [Mode.SECRETARY, Mode.INTIMATE])
def test_short_or_content_free_messages_never_switch(bank: PhraseBank, text: str, current: str) -> None:
    decision = route(text, bank, current=current)

    assert (decision.mode, decision.switch, decision.source, decision.lock) == (current, False, "none", None)


def test_a_very_short_message_may_point_but_does_not_switch(bank: PhraseBank) -> None:
    # "sad" points to intimate, but three letters are too little to move the conversation
    decision = route("sad", bank)

    assert (decision.pointed, decision.mode, decision.switch) == (Mode.INTIMATE, Mode.SECRETARY, False)


# --- explicit commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "current", "mode", "lock"),
    [
        ("/secretary", Mode.INTIMATE, Mode.SECRETARY, True),
        ("/intimate", Mode.SECRETARY, Mode.INTIMATE, True),
        ("/Intimate now", Mode.SECRETARY, Mode.INTIMATE, True),
        ("/auto", Mode.INTIMATE, Mode.INTIMATE, False),
        ("switch to work mode", Mode.INTIMATE, Mode.SECRETARY, True),
        ("Please switch to work mode!", Mode.INTIMATE, Mode.SECRETARY, True),
        ("be my assistant", Mode.INTIMATE, Mode.SECRETARY, True),
        ("back to business", Mode.INTIMATE, Mode.SECRETARY, True),
        ("let's talk as friends", Mode.SECRETARY, Mode.INTIMATE, True),
        ("go back to automatic", Mode.SECRETARY, Mode.SECRETARY, False),
        ("ok, back to automatic please", Mode.INTIMATE, Mode.INTIMATE, False),
    ],
)
def test_explicit_commands_always_win(bank: PhraseBank, text: str, current: str, mode: str, lock: bool) -> None:
    decision = route(text, bank, current=current)

    assert (decision.mode, decision.source, decision.lock, decision.score) == (mode, "command", lock, 100.0)
    assert decision.switch is (mode != current)
    assert decision.matched is not None


def test_a_command_wins_over_the_lock(bank: PhraseBank) -> None:
    assert (route("/intimate", bank, locked=True).mode, route("/intimate", bank, locked=True).lock) == (
        Mode.INTIMATE,
        True,
    )
    assert route("/auto", bank, current=Mode.INTIMATE, locked=True).lock is False


def test_a_sentence_that_only_mentions_work_is_not_a_command(bank: PhraseBank) -> None:
    decision = route("I have to get back to work on my essay", bank, current=Mode.INTIMATE)

    assert decision.source != "command"
    assert (decision.lock, decision.mode) == (None, Mode.INTIMATE)


# --- lock and gate ---------------------------------------------------------------------------


def test_a_locked_conversation_reports_the_pointed_mode_but_stays(bank: PhraseBank) -> None:
    decision = route("i love you so much", bank, locked=True)

    assert (decision.mode, decision.switch, decision.source, decision.lock) == (Mode.SECRETARY, False, "lock", None)
    assert (decision.pointed, decision.matched, decision.score) == (Mode.INTIMATE, "i love you so much", 100.0)
    assert decision.blocked is None


def test_blocked_intimate_stays_in_the_current_mode_with_the_reason(bank: PhraseBank) -> None:
    decision = route("i love you so much", bank, block="adult_required")

    assert (decision.mode, decision.switch, decision.pointed) == (Mode.SECRETARY, False, Mode.INTIMATE)
    assert (decision.blocked, decision.blocked_reason) == (Mode.INTIMATE, "adult_required")


def test_a_blocked_intimate_command_is_refused_and_does_not_lock(bank: PhraseBank) -> None:
    decision = route("/intimate", bank, block="opt_in_required")

    assert (decision.mode, decision.switch, decision.source, decision.lock) == (Mode.SECRETARY, False, "command", None)
    assert (decision.blocked, decision.blocked_reason) == (Mode.INTIMATE, "opt_in_required")


def test_a_conversation_found_in_intimate_mode_leaves_it_when_blocked(bank: PhraseBank) -> None:
    decision = route("how are you feeling today", bank, current=Mode.INTIMATE, locked=True, block="avatar_disallows")

    assert (decision.mode, decision.previous, decision.switch) == (Mode.SECRETARY, Mode.INTIMATE, True)
    assert (decision.blocked, decision.blocked_reason) == (Mode.INTIMATE, "avatar_disallows")


def test_releasing_the_lock_while_blocked_in_intimate_mode_keeps_the_release(bank: PhraseBank) -> None:
    decision = route("/auto", bank, current=Mode.INTIMATE, locked=True, block="opt_in_required")

    assert (decision.mode, decision.switch, decision.lock, decision.source) == (Mode.SECRETARY, True, False, "command")
    assert (decision.blocked, decision.blocked_reason) == (Mode.INTIMATE, "opt_in_required")


def test_the_gate_says_nothing_when_intimate_was_not_pointed_to(bank: PhraseBank) -> None:
    decision = route("start a timer for the pasta", bank, block="adult_required")

    assert (decision.blocked, decision.blocked_reason, decision.mode) == (None, None, Mode.SECRETARY)


def test_unknown_current_mode_is_refused(bank: PhraseBank) -> None:
    with pytest.raises(ValueError, match="unknown current mode"):
        route("hello", bank, current="neutral")


# --- per-avatar phrases and settings ---------------------------------------------------------


def test_avatar_extra_phrases_take_effect_for_that_bank_only(bank: PhraseBank) -> None:
    # Given an avatar with its own cue phrase
    extra = ((Mode.SECRETARY, "engage the zorblax protocol"),)

    # When its bank is built, then the phrase routes; the default bank is untouched
    avatar_bank = phrase_bank_for_avatar(extra)
    match = intent_match("please engage the zorblax protocol", bank=avatar_bank, settings=DEFAULTS)
    assert (match.mode, match.matched) == (Mode.SECRETARY, "engage the zorblax protocol")
    assert intent_match("please engage the zorblax protocol", bank=bank, settings=DEFAULTS).mode is None
    assert len(avatar_bank) == len(bank) + 1
    assert phrase_bank_for_avatar(extra) is avatar_bank


def test_avatar_phrases_count_even_when_short_on_content(bank: PhraseBank) -> None:
    # Given an avatar phrase with a single content word ("stars"), which a packaged phrase could
    # not point with from inside a longer message
    avatar_bank = phrase_bank_for_avatar(((Mode.INTIMATE, "tell me about the stars again"),))

    # When a message contains it, then it points to the avatar phrase's mode
    match = intent_match("could you tell me about the stars again tonight", bank=avatar_bank, settings=DEFAULTS)
    assert (match.mode, match.matched, match.score) == (Mode.INTIMATE, "tell me about the stars again", 85.0)
    assert intent_match("could you tell me about the stars again tonight", bank=bank, settings=DEFAULTS).mode is None


def test_avatar_extra_phrases_must_name_a_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        phrase_bank_for_avatar((("neutral", "hello there"),))


def test_router_settings_read_django_settings(settings: object) -> None:
    # Given one threshold overridden in the project settings
    settings.ROUTER_SWITCH_THRESHOLD = 91  # type: ignore[attr-defined]

    # Then it is read, and the others keep their defaults
    assert RouterSettings.from_django_settings() == RouterSettings(switch_threshold=91.0)


def test_decision_as_dict_carries_the_explanation(bank: PhraseBank) -> None:
    assert route("i miss you", bank).as_dict() == {
        "mode": Mode.INTIMATE,
        "previous": Mode.SECRETARY,
        "pointed": Mode.INTIMATE,
        "score": 100.0,
        "matched": "i miss you",
        "switch": True,
        "source": "intent",
        "lock": None,
        "blocked": None,
        "blocked_reason": None,
    }


def test_intent_evaluate_counts_per_label(bank: PhraseBank) -> None:
    # Given rows where one neutral-labelled message is routed to secretary
    rows = [
        ("start a timer for the pasta", Mode.SECRETARY),
        ("i miss you", Mode.INTIMATE),
        ("which company owns you", NEUTRAL),
        ("remind me to water the plants", NEUTRAL),
    ]

    result = intent_evaluate(rows, bank=bank, settings=DEFAULTS)

    assert [(m.label, m.precision, m.recall, m.support) for m in result.labels] == [
        (Mode.SECRETARY, 0.5, 1.0, 1),
        (Mode.INTIMATE, 1.0, 1.0, 1),
        (NEUTRAL, 1.0, 0.5, 2),
    ]
    assert (round(result.macro_f1, 3), result.false_switch, result.n) == (0.778, 0.5, 4)
