import math

import pytest

from grader.capability import rule_passes, run_suites, suite_table
from grader.instruct import parse_instruction, required_words_present
from grader.loss import evaluate_loss
from grader.memorization import BigramIndex, rouge2_precision, split_story
from grader.resources import CapabilityItem, load_capability_suites
from grader.stats import bootstrap_ci, distinct_n, summarize


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_prompts():
    few = [6, 7, 8, 5, 9]
    lo, hi = bootstrap_ci(few)
    assert lo < sum(few) / 5 < hi
    many = few * 20
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert summarize([])["mean"] is None


def test_distinct_n():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a"], 2) is None


def test_rouge2_precision_and_bigram_index_find_the_copied_story():
    train = [
        "the cat sat on the mat and slept",
        "a dog ran in the park with a ball",
        "the bird sang a song in the tree",
    ]
    assert rouge2_precision("the cat sat on the mat", train[0]) == 1.0
    assert rouge2_precision("the cat flew", train[0]) == pytest.approx(0.5)
    idx = BigramIndex(train)
    doc, score = idx.closest("then a dog ran in the park")
    assert doc == 1 and score == pytest.approx(5 / 6)
    assert idx.closest("zebra quokka")[1] == 0.0
    beginning, rest = split_story("one two three four five six seven eight nine ten")
    assert beginning == "one two three four" and rest == " five six seven eight nine ten"


def test_instruction_parsing_and_inflected_words():
    ins = parse_instruction(
        "Summary: Two kids play.\nWords: quit, oak, gloomy\n"
        "Features: Dialogue, BadEnding\nRandom sentence: It was cold.\n"
        "Story: \n\nSara played."
    )
    assert ins.words == ("quit", "oak", "gloomy")
    assert ins.features == ("Dialogue", "BadEnding")
    assert ins.sentence == "It was cold."
    assert ins.prompt.endswith("Random sentence: It was cold.\nStory: \n\n")
    assert required_words_present("He quits. The oaks looked gloomy.", ins.words) == [
        True,
        True,
        True,
    ]
    assert required_words_present("Nothing here.", ["run", "ran"]) == [False, False]
    assert required_words_present("She ran home.", ["run"]) == [True]


def test_capability_rules():
    item = CapabilityItem("reasoning", "so instead she asked", ("her dad", "her father"), False)
    assert rule_passes(item, " her dad if she could have a dog.", 12)
    assert not rule_passes(item, " her mom again and again.", 12)
    # Outside the answer window does not count.
    assert not rule_passes(item, " " + "la " * 20 + "her dad", 12)
    # Whole words only.
    assert not rule_passes(CapabilityItem("k", "p", ("fall",), False), " fallen leaves", 12)


def test_capability_suites_on_a_model(loaded):
    rows = run_suites(loaded, load_capability_suites(only=["reasoning"]))
    assert len(rows) == 2 and all(r["passed"] in (True, False) for r in rows)
    table = suite_table(rows)
    assert table["reasoning"]["n"] == 2
    assert table["reasoning"]["accuracy"] == sum(r["passed"] for r in rows) / 2


def test_loss_perplexity_bits_per_byte(loaded):
    texts = ["Once upon a time there was a cat.", "Tom had a boat."] * 3
    res = evaluate_loss(loaded, texts, context_length=16)
    # A random model is close to uniform over the vocabulary.
    assert abs(res["loss"] - math.log(len(loaded.tokenizer))) < 0.5
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]))
    assert res["bytes"] == sum(len(t.encode()) for t in texts)
    assert res["bits_per_byte"] == pytest.approx(
        res["loss"] * res["tokens"] / math.log(2) / res["bytes"]
    )
    n_tokens = sum(len(loaded.tokenizer(t)["input_ids"]) + 1 for t in texts)
    assert res["tokens"] == n_tokens  # every token after the leading EOS predicted once
    assert res["context_length"] == 16
    # Same number regardless of window size (up to the context each token sees).
    assert evaluate_loss(loaded, texts, context_length=200)["tokens"] == n_tokens


def test_instruct_models_are_recognised_from_training_json():
    from grader.instruct import is_instruct_model

    assert is_instruct_model({"format": "instruct", "steps": 10})
    assert not is_instruct_model({"format": "plain", "steps": 10})
    assert not is_instruct_model({})


def test_every_capability_rule_passes_its_right_and_fails_its_wrong_continuation():
    suites = load_capability_suites()
    assert suites.version == "capability-v2"
    for item in suites.items:
        assert item.right and item.wrong, item.prompt
        assert rule_passes(item, item.right, suites.window), (item.prompt, item.right)
        assert not rule_passes(item, item.wrong, suites.window), (item.prompt, item.wrong)


def test_suite_accuracy_has_a_wilson_interval():
    from grader.capability import wilson_ci

    rows = [{"suite": "s", "passed": False}] * 11
    t = suite_table(rows)["s"]
    assert t["accuracy"] == 0 and t["ci95"][0] == 0 and 0.2 < t["ci95"][1] < 0.3
    lo, hi = wilson_ci(5, 10)
    assert lo < 0.5 < hi and hi - lo > wilson_ci(50, 100)[1] - wilson_ci(50, 100)[0]
