"""Story checks, each rejection named."""

import json
from pathlib import Path

import pytest

from generator.checks import (
    CheckConfig,
    CheckResult,
    StoryChecker,
    repeated_share,
    story_words,
    word_forms,
)
from vocab import Vocabulary

REAL_STORIES = json.loads(
    (Path(__file__).parent / "data" / "real_stories_heldout.json").read_text()
)["stories"]

STORY = (
    "Once upon a time, there was a little girl named Lily. She had a cute red hat. "
    "One day, she saw a big tree in the park. She wanted to hang her hat on the tree.\n"
    "Lily climbed up and hung her hat on a branch. Her foot slipped, but she held on. "
    '"I did it!" she said. Her mom smiled and gave her a big hug. They went home happy.'
)


@pytest.fixture(scope="module")
def checker():
    return StoryChecker()


def test_good_story_is_accepted(checker):
    result = checker.check(STORY, finish_reason="stop", required_words=["hang", "foot", "cute"])
    assert result == CheckResult(True, (), result.details)
    assert result.details["word_count"] == len(STORY.split()) == 71
    assert result.details["oov_share"] == 0.0


def test_real_stories_pass_with_defaults(checker):
    # Stories not used to build the basic word list.
    assert len(REAL_STORIES) == 100
    results = [checker.check(s, finish_reason="stop", required_words=[]) for s in REAL_STORIES]
    assert sum(r.accepted for r in results) >= 97


def test_empty(checker):
    for text in ("", "   \n", None, "...!"):
        result = checker.check(text, finish_reason="stop", required_words=["hang"])
        assert result.rejections == ("empty",)
        assert not result.accepted


def test_a_story_holding_the_release_separator_is_rejected(checker):
    # A local model that writes its end-of-text token and goes on: the release files split there.
    two = STORY + "<|endoftext|>Once upon a time, a cat sat on a mat."
    result = checker.check(two, finish_reason="stop", required_words=["hang", "foot", "cute"])
    assert result.rejections == ("separator",) and not result.accepted


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't write a story with those words.",
        "I cannot help with that request.",
        "As an AI language model, I do not write stories about that.",
        "Sorry, I am not able to do this.",
        "Here is a note. I can't create that story for this request, it is not allowed.",
    ],
)
def test_refusal(checker, text):
    result = checker.check(text * 6, finish_reason="stop", required_words=[])
    assert "refusal" in result.rejections
    assert result.details["refusal_match"]


def test_sorry_inside_dialogue_is_not_a_refusal(checker):
    story = '"I\'m sorry," said Tom. "I cannot find your ball." ' + STORY
    result = checker.check(story, finish_reason="stop", required_words=[])
    assert result.accepted, result.details


def test_truncated(checker):
    result = checker.check(STORY, finish_reason="length", required_words=["hang"])
    assert result.rejections == ("truncated",)


def test_length_limits(checker):
    short = checker.check(
        "Tom ran to the park. He was happy.", finish_reason="stop", required_words=[]
    )
    assert short.rejections == ("too_short",)
    many = "\n".join(REAL_STORIES[:10])  # distinct stories: no repetition
    long = checker.check(many, finish_reason="stop", required_words=[])
    assert long.rejections == ("too_long",) and long.details["word_count"] > 1000
    loose = StoryChecker(config=CheckConfig(min_words=5, max_words=5000))
    assert loose.check(many, finish_reason="stop", required_words=[]).accepted


def test_missing_words_with_inflections(checker):
    result = checker.check(
        STORY, finish_reason="stop", required_words=["hang", "foot", "cute", "parade", "believe"]
    )
    assert result.rejections == ("missing_words",)
    assert result.details["missing_words"] == ["parade", "believe"]
    hanging = STORY.replace("hang her hat", "keep her hat").replace("hung", "was hanging")
    assert checker.check(hanging, finish_reason="stop", required_words=["hang"]).accepted
    feet = STORY.replace("Her foot", "Her feet")
    assert checker.check(feet, finish_reason="stop", required_words=["foot"]).accepted
    assert {"hung", "hanging", "hangs"} <= word_forms("hang")
    assert {"cuter", "cutest"} <= word_forms("cute")
    assert "ran" in word_forms("run")


def test_hyphenated_required_word(checker):
    story = STORY + " Then they ate ice cream."
    assert checker.check(story, finish_reason="stop", required_words=["ice-cream"]).accepted
    assert (
        "missing_words"
        in checker.check(STORY, finish_reason="stop", required_words=["ice-cream"]).rejections
    )


def test_out_of_vocabulary(checker):
    adult = (
        "The quarterly earnings report indicated substantial macroeconomic volatility. "
        "Analysts projected diminishing returns on leveraged infrastructure investments, "
        "citing regulatory uncertainty and geopolitical headwinds. Consequently, the "
        "committee postponed its deliberations regarding monetary tightening, whereas "
        "institutional stakeholders demanded unprecedented transparency concerning "
        "derivative exposures, sovereign liabilities and counterparty obligations. "
        "Meanwhile, multinational conglomerates restructured subsidiaries, renegotiated "
        "procurement agreements and accelerated automation initiatives, anticipating "
        "persistent inflationary pressures alongside deteriorating consumer sentiment."
    )
    result = checker.check(adult, finish_reason="stop", required_words=[])
    assert result.rejections == ("out_of_vocabulary",)
    assert result.details["oov_share"] > 0.5
    assert "accelerated" in result.details["oov_words"]  # the first 20, sorted


def test_names_are_not_out_of_vocabulary(checker):
    story = STORY.replace("Lily", "Zorblax")
    assert checker.check(story, finish_reason="stop", required_words=[]).accepted


def test_custom_vocabulary_and_extra_words():
    vocabulary = Vocabulary(nouns=("photosynthesis",), verbs=("hang",), adjectives=("cute",))
    story = STORY + " The tree used photosynthesis. " + " ".join(["chlorophyll"] * 3) + "."
    strict = StoryChecker(vocabulary, CheckConfig(max_oov_share=0.02))
    result = strict.check(story, finish_reason="stop", required_words=["photosynthesis"])
    assert result.rejections == ("out_of_vocabulary",)
    assert result.details["oov_words"] == ["chlorophyll"]
    relaxed = StoryChecker(
        vocabulary, CheckConfig(max_oov_share=0.02, extra_words=frozenset({"chlorophyll"}))
    )
    assert relaxed.check(story, finish_reason="stop", required_words=[]).accepted


def test_several_rejections_in_check_order(checker):
    result = checker.check("I'm sorry, I cannot.", finish_reason="length", required_words=["hang"])
    assert result.rejections == ("refusal", "truncated", "too_short", "missing_words")
    assert CheckResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_disabled_checks_and_bad_config():
    checker = StoryChecker(config=CheckConfig(disabled=frozenset({"too_short"})))
    assert checker.check("Tom ran to the park.", finish_reason="stop", required_words=[]).accepted
    with pytest.raises(ValueError, match="unknown check"):
        CheckConfig(disabled=frozenset({"spelling"}))
    with pytest.raises(ValueError, match="min_words <= max_words"):
        CheckConfig(min_words=100, max_words=10)
    with pytest.raises(ValueError, match="max_oov_share"):
        CheckConfig(max_oov_share=1.5)


RELEASE_SAMPLE = Path(__file__).parents[1] / "service" / "data" / "TinyStories-train-sample1200.txt"


def test_a_story_in_a_loop_is_rejected_and_real_refrains_are_not(checker):
    real = [s.strip() for s in RELEASE_SAMPLE.read_text().split("<|endoftext|>") if s.strip()]
    assert len(real) == 1200
    shares = [repeated_share(story_words(s), 10) for s in real]
    assert max(shares) < 0.3  # echoes and refrains ("I can move that way.") stay well under
    assert not any(
        "repetition" in checker.check(s, finish_reason="stop", required_words=[]).rejections
        for s in real
    )
    # What models stuck in a loop write: a tail repeating itself, a story told twice.
    looping = STORY + " And they played and played and played in the park" * 8
    twice = f"{STORY}\n\n{STORY}"
    for text in (looping, twice):
        result = checker.check(text, finish_reason="stop", required_words=[])
        assert result.rejections == ("repetition",), result
        assert result.details["repeated_share"] > 0.4
    assert (
        checker.check(STORY, finish_reason="stop", required_words=[]).details.get("repeated_share")
        is None
    )
    loose = StoryChecker(config=CheckConfig(max_repeated_share=1.0))
    assert loose.check(twice, finish_reason="stop", required_words=[]).accepted
    off = StoryChecker(config=CheckConfig(disabled=frozenset({"repetition"})))
    assert off.check(twice, finish_reason="stop", required_words=[]).accepted
    with pytest.raises(ValueError, match="max_repeated_share must be in"):
        CheckConfig(max_repeated_share=1.5)
    with pytest.raises(ValueError, match="repeat_ngram must be >= 2"):
        CheckConfig(repeat_ngram=1)
