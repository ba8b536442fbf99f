"""TinyStories-Instruct record rendering and parsing."""

import json
from collections import Counter
from pathlib import Path

import pytest

from generator.instruct import (
    compose_instruct_record,
    format_instruct_file,
    instruct_header,
    parse_instruct_record,
    random_sentence,
    render_instruct_record,
    sentences,
    split_instruct_file,
)

REAL_TEXT = json.loads(
    (Path(__file__).parent / "data" / "instruct_valid_first2records.json").read_text()
)["text"]


def _header_of(fields):
    return [
        (key, ", ".join(fields[key]) if key in ("words", "features") else fields[key])
        for key in fields["order"]
    ]


def test_parse_real_records():
    records = split_instruct_file(REAL_TEXT)
    assert len(records) == 2
    first = parse_instruct_record(records[0])
    assert first["order"] == ["features", "words", "summary"]
    assert first["features"] == ["Dialogue"]
    assert first["words"] == ["quit", "oak", "gloomy"]
    assert first["summary"].startswith("Sara and Ben were playing in the park, but Sara")
    assert first["random_sentence"] is None
    assert first["story"].startswith("Sara and Ben were playing in the park.")
    assert first["story"].endswith("They went home and had a cozy and happy time.")
    assert first["instruction"] == (
        "Features: Dialogue\nWords: quit, oak, gloomy\nSummary: " + first["summary"] + "\n"
    )
    second = parse_instruct_record(records[1] + "\n<|endoftext|>\n")
    assert second["order"] == ["summary", "words", "features"]
    assert second["features"] == ["Dialogue", "BadEnding", "MoralValue"]


def test_compose_reproduces_real_file_byte_for_byte():
    records = [
        compose_instruct_record(_header_of(fields), fields["story"])
        for fields in map(parse_instruct_record, split_instruct_file(REAL_TEXT))
    ]
    assert records[0].startswith("Features: Dialogue\nWords: quit, oak, gloomy\nSummary: ")
    assert "\nStory: \n\nSara and Ben" in records[0]
    assert format_instruct_file(records) == REAL_TEXT


def test_render_is_seeded_and_round_trips():
    fields = dict(
        story="\n\nTom saw a big dog. The dog ran fast!\nTom laughed.\n",
        summary="Tom sees a dog run and laughs.",
        words=["run", "dog", "big"],
        features=["Dialogue", "Twist"],
        random_sentence="The dog ran fast!",
    )
    text = render_instruct_record(**fields, seed=11)
    assert text == render_instruct_record(**fields, seed=11)
    assert text.endswith("Story: \n\nTom saw a big dog. The dog ran fast!\nTom laughed.")
    parsed = parse_instruct_record(text)
    assert parsed["story"] == "Tom saw a big dog. The dog ran fast!\nTom laughed."
    for key in parsed["order"]:
        expected = fields[key]
        assert parsed[key] == expected
    assert compose_instruct_record(_header_of(parsed), parsed["story"]) == text
    assert instruct_header(text) == text[: text.index("Story: ")]


def test_render_subsets_and_orders_vary_with_seed():
    fields = dict(
        story="A cat sat.",
        summary="A cat sits.",
        words=["sit", "cat", "soft"],
        features=["Dialogue"],
        random_sentence="A cat sat.",
    )
    orders = Counter(
        tuple(parse_instruct_record(render_instruct_record(**fields, seed=s))["order"])
        for s in range(400)
    )
    sizes = Counter(len(order) for order in orders.elements())
    assert len(orders) > 30  # many subsets and orders
    assert set(sizes) >= {1, 2, 3, 4}
    # Each line kept with probability 0.75: all four lines in about 0.75**4 = 32% of records.
    assert 0.22 < sizes[4] / 400 < 0.42
    assert all(
        parse_instruct_record(render_instruct_record(**fields, seed=s, include_prob=1.0))[
            "order"
        ].__len__()
        == 4
        for s in range(5)
    )


def test_empty_lines_are_left_out():
    text = render_instruct_record(
        story="A cat sat.",
        summary="",
        words=["sit"],
        features=[],
        random_sentence="",
        seed=0,
        include_prob=1.0,
    )
    assert text == "Words: sit\nStory: \n\nA cat sat."


def test_bad_records():
    with pytest.raises(ValueError, match="no line starting with 'Story:'"):
        parse_instruct_record("Summary: hi\nOnce upon a time.")
    with pytest.raises(ValueError, match="header line 1 is 'Moral: be kind'"):
        parse_instruct_record("Moral: be kind\nStory: \n\nHi.")
    with pytest.raises(ValueError, match="non-empty story"):
        render_instruct_record(
            story=" ", summary="s", words=[], features=[], random_sentence="", seed=0
        )


def test_random_sentence_picks_a_real_sentence():
    story = parse_instruct_record(split_instruct_file(REAL_TEXT)[0])["story"]
    all_sentences = sentences(story)
    assert all_sentences[0] == "Sara and Ben were playing in the park."
    picks = {random_sentence(story, seed) for seed in range(30)}
    assert len(picks) > 5
    assert all(p in all_sentences and p in story and len(p.split()) >= 3 for p in picks)
    assert random_sentence(story, 4) == random_sentence(story, 4)
    assert random_sentence("", 1) == ""
