import asyncio

import pytest

from grader.cache import JudgmentCache, judgment_key
from grader.judge import Judge, JudgeReply, JudgeUnavailable, gpt_eval_fields
from grader.resources import load_rubric

GOOD = "Grammar: 8/10, Creativity: 7/10, Consistency: 6/10, Plot: 5/10, Age group: C (6-7)"


class ScriptedJudge:
    """A transport answering turn 2 from a script; counts calls per kind."""

    model = "scripted-judge"

    def __init__(self, answers, fail_after=None):
        self.answers = list(answers)
        self.calls = 0
        self.turn2 = 0
        self.fail_after = fail_after
        self.seen = []

    async def chat(self, messages):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise JudgeUnavailable("judge unreachable (connection refused)")
        await asyncio.sleep(0)
        self.seen.append(messages)
        if len(messages) == 1:
            return JudgeReply("It is mostly fine.", 10, 5)
        self.turn2 += 1
        return JudgeReply(self.answers.pop(0) if self.answers else GOOD, 20, 10)


def _judge(transport, tmp_path):
    return Judge(transport, load_rubric(), JudgmentCache(tmp_path / "cache.jsonl"))


async def test_two_turn_conversation_and_cache(tmp_path):
    t = ScriptedJudge([GOOD])
    j = _judge(t, tmp_path)
    res = await j.grade("Once upon", " a time.", gpt_eval_fields("Once upon", " a time."))
    assert res.ok and res.method == "strict" and res.scores["grammar"] == 8
    conv = t.seen[-1]
    assert [m["role"] for m in conv] == ["user", "assistant", "user"]
    assert "Once upon*** a time." in conv[0]["content"]
    assert conv[2]["content"].startswith("Now, grade")
    # Second judge over the same cache file: no calls.
    t2 = ScriptedJudge([])
    j2 = _judge(t2, tmp_path)
    again = await j2.grade("Once upon", " a time.", gpt_eval_fields("Once upon", " a time."))
    assert again.cached and again.scores == res.scores and t2.calls == 0
    key = judgment_key("scripted-judge", "gpt-eval-v2", "Once upon", " a time.")
    assert JudgmentCache(tmp_path / "cache.jsonl").get(key)["scores"]["plot"] == 5


async def test_unreadable_answer_gets_one_correction_turn(tmp_path):
    t = ScriptedJudge(["I refuse to grade.", GOOD])
    j = _judge(t, tmp_path)
    ok = await j.grade("a", "b", gpt_eval_fields("a", "b"))
    assert ok.ok and ok.attempts == 2 and j.stats.retries == 1
    assert ok.first_raw == "I refuse to grade."
    # Not the same messages again: the judge sees its answer and a request for the format.
    retry = t.seen[-1]
    assert [m["role"] for m in retry] == ["user", "assistant", "user", "assistant", "user"]
    assert retry[3]["content"] == "I refuse to grade."
    assert retry[4]["content"] == load_rubric().correction
    assert "Answer in the format:" in retry[4]["content"]


async def test_final_parse_failure_is_recorded_and_cached_with_raw_answers(tmp_path):
    t = ScriptedJudge(["nonsense", "still nonsense"])
    j = _judge(t, tmp_path)
    bad = await j.grade("c", "d", gpt_eval_fields("c", "d"))
    assert bad.method == "parse_failure" and not bad.ok
    assert bad.raw == "still nonsense" and bad.first_raw == "nonsense"
    assert j.stats.parse_failures == 1 and t.calls == 3
    entry = JudgmentCache(tmp_path / "cache.jsonl").get(bad.key)
    assert entry["method"] == "parse_failure" and entry["first_raw"] == "nonsense"
    # A rerun reuses the recorded failure without paying for it again...
    t2 = ScriptedJudge([])
    again = await _judge(t2, tmp_path).grade("c", "d", gpt_eval_fields("c", "d"))
    assert again.cached and again.method == "parse_failure" and t2.calls == 0
    # ...unless asked to try failures again (say, with a better judge prompt).
    j3 = Judge(t2, load_rubric(), JudgmentCache(tmp_path / "cache.jsonl"), rejudge_failures=True)
    third = await j3.grade("c", "d", gpt_eval_fields("c", "d"))
    assert third.ok and t2.calls == 2


async def test_unreachable_judge_stops_and_keeps_finished_work(tmp_path):
    items = [(f"p{i}", f"c{i}", gpt_eval_fields(f"p{i}", f"c{i}")) for i in range(6)]
    t = ScriptedJudge([], fail_after=4)  # two complete judgments (2 calls each)
    j = Judge(t, load_rubric(), JudgmentCache(tmp_path / "cache.jsonl"), concurrency=1)
    with pytest.raises(JudgeUnavailable):
        await j.grade_many(items)
    assert len(JudgmentCache(tmp_path / "cache.jsonl")) == 2
    # Rerun with a working judge: only the four missing ones are judged.
    t2 = ScriptedJudge([])
    j2 = _judge(t2, tmp_path)
    res = await j2.grade_many(items)
    assert all(r.ok for r in res)
    assert sum(r.cached for r in res) == 2 and t2.turn2 == 4


def test_torn_cache_line_is_skipped(tmp_path):
    path = tmp_path / "cache.jsonl"
    c = JudgmentCache(path)
    c.put({"key": "k1", "scores": {"grammar": 5}, "method": "strict"})
    with path.open("a") as fh:
        fh.write('{"key": "k2", "scor')
    again = JudgmentCache(path)
    assert len(again) == 1 and again.get("k1")["scores"]["grammar"] == 5


class FailingJudge:
    model = "failing-judge"

    async def chat(self, messages):
        from grader.judge import JudgeCallError

        raise JudgeCallError("content_filter: blocked")


async def test_a_failed_call_is_recorded_as_error_and_not_cached(tmp_path):
    j = Judge(FailingJudge(), load_rubric(), JudgmentCache(tmp_path / "c.jsonl"))
    res = await j.grade_many([("a", "b", gpt_eval_fields("a", "b"))])
    assert res[0].method == "error" and "content_filter" in res[0].error
    assert len(JudgmentCache(tmp_path / "c.jsonl")) == 0 and j.stats.errors == 1


def test_aggregate_per_prompt_means_failures_and_age():
    from grader.generation import Completion
    from grader.gpteval import Sample, aggregate
    from grader.judge import Judgment

    def judged(g, age):
        scores = {"grammar": g, "creativity": g - 1, "consistency": g, "plot": None}
        return Judgment("k", scores, age, "lenient", 1, "")

    samples = [Sample(i, f"p{i}", Completion(f"p{i}", "x", 1, False)) for i in (0, 0, 1, 1)]
    judgments = [
        judged(8, "C"),
        judged(6, "E"),
        judged(4, "A"),
        Judgment("k", {}, None, "parse_failure", 2, "??"),
    ]
    res = aggregate(samples, judgments)
    assert [r["scores"]["grammar"] for r in res["per_prompt"]] == [7.0, 4.0]
    assert res["per_prompt"][1]["n_failed"] == 1
    g = res["overall"]["grammar"]
    assert g["mean"] == 5.5 and g["n_prompts"] == 2 and 4.0 <= g["ci95"][0] <= g["ci95"][1] <= 7.0
    assert res["overall"]["plot"]["mean"] is None
    assert res["overall"]["age_group"]["distribution"] == {"A": 1, "C": 1, "E": 1}
    assert res["overall"]["age_group"]["mean_letter"] == "C"
    assert res["parse_failures"] == 1 and res["judged"] == 3


class InProcessSimulator:
    """The simulator's answering code behind the Judge, without HTTP."""

    model = "simulator-judge-1"
    simulator = True

    async def chat(self, messages):
        import random

        from generator.simulator.answers import answer

        return JudgeReply(answer(messages, random.Random(0)).text, 10, 10)


async def test_simulator_judge_ranks_real_stories_above_an_untrained_model(loaded, tmp_path):
    """Real held-out endings beat what a random-weight model writes after the same beginnings."""
    import json
    import statistics
    from pathlib import Path

    from grader.generation import GenerationSettings, generate

    data = Path(__file__).parents[1] / "generator" / "data" / "real_stories_heldout.json"
    stories = json.loads(data.read_text())["stories"][:12]
    cuts = [(" ".join(s.split()[:25]), " " + " ".join(s.split()[25:])) for s in stories]
    model = generate(loaded, [b for b, _ in cuts], GenerationSettings(max_new_tokens=60))
    judge = Judge(InProcessSimulator(), load_rubric(), None)
    real = await judge.grade_many([(b, c, gpt_eval_fields(b, c)) for b, c in cuts])
    weak = await judge.grade_many(
        [(b, o.text, gpt_eval_fields(b, o.text)) for (b, _), o in zip(cuts, model, strict=True)]
    )
    assert all(j.ok and j.method == "strict" for j in real + weak)
    assert judge.simulator
    for c in ("grammar", "creativity", "consistency", "plot"):
        good = statistics.mean(j.scores[c] for j in real)
        bad = statistics.mean(j.scores[c] for j in weak)
        assert good >= bad + 3, (c, good, bad)


async def test_aggregate_states_counts_and_keeps_raw_failures():
    from grader.generation import Completion
    from grader.gpteval import Sample, aggregate
    from grader.judge import Judgment

    samples = [Sample(0, "p", Completion("p", "x", 1, False)) for _ in range(3)]
    js = [
        Judgment(
            "k",
            {"grammar": 8, "creativity": 7, "consistency": 6, "plot": None},
            "C",
            "lenient",
            1,
            "",
        ),
        Judgment(
            "k", {"grammar": 6, "creativity": 5, "consistency": 6, "plot": 4}, "B", "strict", 1, ""
        ),
        Judgment(
            "k", {}, None, "parse_failure", 2, "I cannot grade this.", first_raw="Nice story."
        ),
    ]
    res = aggregate(samples, js)
    assert res["overall"]["grammar"]["n_completions"] == 2
    assert res["overall"]["grammar"]["n_unscored"] == 1
    assert (
        res["overall"]["plot"]["n_completions"] == 1 and res["overall"]["plot"]["n_unscored"] == 2
    )
    assert res["overall"]["grammar"]["mean"] == 7.0  # the failure is not a zero
    assert res["failures"] == [
        {
            "prompt_index": 0,
            "method": "parse_failure",
            "raw": "I cannot grade this.",
            "first_raw": "Nice story.",
        }
    ]


async def test_every_answer_parsed_or_not_is_kept_in_the_answer_log(tmp_path):
    import json

    from grader.answers import AnswerLog, prompt_id

    log_path = tmp_path / "report" / "judge_answers.jsonl"
    t = ScriptedJudge([GOOD, "nonsense", "still nonsense"])
    j = Judge(
        t, load_rubric(), JudgmentCache(tmp_path / "c.jsonl"), concurrency=1,
        answers=AnswerLog(log_path),
    )  # fmt: skip
    items = [(p, c, gpt_eval_fields(p, c)) for p, c in [("Once", " upon."), ("Tom", " ran.")]]
    ok, bad = await j.grade_many(items)
    assert ok.ok and bad.method == "parse_failure"
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["method"] for e in lines] == ["strict", "parse_failure"]
    good, unreadable = lines
    assert good["raw"] == GOOD and good["error"] is None and good["prompt_id"] == prompt_id("Once")
    assert good["parsed"]["scores"]["grammar"] == 8 and good["parsed"]["age_group"] == "C"
    assert good["judge_model"] == "scripted-judge" and good["rubric_version"] == "gpt-eval-v2"
    assert good["prompt"] == "Once" and good["completion"] == " upon." and not good["cached"]
    assert unreadable["raw"] == "still nonsense" and unreadable["first_raw"] == "nonsense"
    assert unreadable["parsed"] is None and unreadable["error"].startswith("unreadable answer")
    # The cache keeps both raw answers of each judgment as well.
    cache = JudgmentCache(tmp_path / "c.jsonl")
    assert cache.get(ok.key)["raw"] == GOOD
    assert (cache.get(bad.key)["raw"], cache.get(bad.key)["first_raw"]) == (
        "still nonsense",
        "nonsense",
    )
    # A rerun from the cache writes a fresh log with the same answers, marked cached.
    again = Judge(
        ScriptedJudge([]), load_rubric(), JudgmentCache(tmp_path / "c.jsonl"),
        answers=AnswerLog(log_path),
    )  # fmt: skip
    await again.grade_many(items)
    rerun = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(rerun) == 2 and all(e["cached"] for e in rerun)
    assert {e["raw"] for e in rerun} == {GOOD, "still nonsense"}


async def test_a_failed_call_is_in_the_answer_log_with_its_error(tmp_path):
    import json

    from grader.answers import AnswerLog

    log = AnswerLog(tmp_path / "answers.jsonl")
    j = Judge(FailingJudge(), load_rubric(), None, answers=log)
    await j.grade_many([("a", "b", gpt_eval_fields("a", "b"))])
    (entry,) = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert entry["method"] == "error" and entry["error"] == "content_filter: blocked"
    assert entry["raw"] == "" and entry["parsed"] is None
