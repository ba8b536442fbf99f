"""Evaluation-prompt decontamination with the authors' 44 prompts and real stories."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.dataset.decontam import Decontaminator, EvaluationSetError, load_prompts

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def real() -> list[str]:
    text = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


@pytest.fixture(scope="module")
def deco() -> Decontaminator:
    return Decontaminator()


def test_packaged_prompts_are_the_44():
    prompts = load_prompts()
    assert len(prompts) == 44
    assert prompts[0].startswith("Once upon a time, there lived a bunny in a field.")


def test_prompt_with_continuation_is_contaminated(deco):
    for i in (0, 3, 17, 43):
        story = deco.prompts[i] + " she went home and had a nap. The end."
        res = deco.check(story)
        assert res.contaminated and res.prompt_index == i and res.overlap == 1.0


def test_partial_copy_in_the_middle_detected(deco):
    words = deco.prompts[2].split()
    story = "Tom had a red ball. " + " ".join(words[: len(words) // 2]) + " and then he slept."
    res = deco.check(story)
    assert res.contaminated and res.prompt_index == 2 and 0.25 <= res.overlap < 1.0


def test_real_stories_not_contaminated(deco, real):
    results = [deco.check(s) for s in real]
    assert not any(r.contaminated for r in results)
    # stock openings do share single 10-grams with prompts: why the threshold is not "any"
    assert sum(r.overlap > 0 for r in results) > 50
    assert max(r.overlap for r in results) < 0.25


def test_threshold_any_shared_ngram(real):
    strict = Decontaminator(threshold=1e-9)
    assert strict.count(real[:300]) > 0


def test_user_sets_yaml_and_txt(tmp_path):
    yml = tmp_path / "eval.yaml"
    yml.write_text(
        "- The purple robot danced on the moon while eating seven golden pancakes\n",
        encoding="utf-8",
    )
    txt = tmp_path / "eval.txt"
    txt.write_text(
        "First prompt about a dragon who loved to bake bread every morning\n\nShort one\n",
        encoding="utf-8",
    )
    d = Decontaminator(load_prompts(yml))
    assert d.check(
        "Once the purple robot danced on the moon while eating seven golden pancakes, it was happy."
    ).contaminated
    t = Decontaminator(load_prompts(txt))
    assert len(t.prompts) == 2
    assert t.check("and then: short one. the end").prompt_index == 1  # fewer than 10 words
    assert not t.check("a dragon baked").contaminated
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: 3\n", encoding="utf-8")
    with pytest.raises(EvaluationSetError, match=r"bad\.yaml"):
        load_prompts(bad)
    with pytest.raises(ValueError):
        Decontaminator(["x"], threshold=0)


def _reference_check(prompts: list[str], text: str, n: int, threshold: float) -> tuple:
    """The definition, computed the slow way: joined n-gram strings of the normalised text."""
    from service.dataset.minhash import normalize_text

    def grams(t: str) -> set[str]:
        w = normalize_text(t).split()
        return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}

    story = grams(text)
    padded = f" {normalize_text(text)} "
    best, best_i = 0.0, None
    for i, p in enumerate(prompts):  # best overlap, lowest index on ties
        pg = grams(p)
        if pg and len(pg & story) / len(pg) > best:
            best, best_i = len(pg & story) / len(pg), i
    # a prompt shorter than n words counts as fully shared when it occurs as a phrase
    short = [i for i, p in enumerate(prompts) if not grams(p) and normalize_text(p)]
    for i in short:
        if f" {normalize_text(prompts[i])} " in padded:
            best, best_i = 1.0, i
            break
    return best >= threshold and best_i is not None, best, best_i


def test_normalized_words_equal_normalize_text():
    from service.dataset.decontam import normalized_words
    from service.dataset.minhash import normalize_text

    for s in (
        "Tom's_dog\x1c\x00ran`quickly!!  x__y 3.5",
        "Café ＡＢＣ naïve ‘quoted’ ﬁsh",
        "\x0b\x0c\t\r\n",
        "",
        'Lily said, "Look! A big-red ball." {x} [y] ~z^',
    ):
        assert normalized_words(s) == normalize_text(s).split()


def test_check_matches_reference_definition(real):
    prompts = [*load_prompts()[:10], "short one", "the end"]
    for n, threshold in ((10, 0.25), (3, 0.05)):
        d = Decontaminator(prompts, n=n, threshold=threshold)
        texts = [
            prompts[i % 12][: (i * 37) % 400] + " " + real[i] + (" the end" if i % 5 == 0 else "")
            for i in range(120)
        ]
        got = [d.check(t) for t in texts]
        want = [_reference_check(prompts, t, n, threshold) for t in texts]
        assert [(r.contaminated, r.overlap, r.prompt_index) for r in got] == want
        assert 0 < sum(r.contaminated for r in got) < len(texts)
