"""The LLM simulator: stories honour recipes, summaries, judge answers, limits, determinism,
slow-server mode."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time

import httpx
import pytest

from generator.prompts import render_story_prompt, render_summary_prompt
from generator.simulator import SimulatorConfig, run_simulator
from generator.simulator.answers import answer, parse_story_request, score
from generator.simulator.app import SimulatorState
from generator.simulator.grammar import StoryRequest, write_story
from generator.simulator.wordlists import BOYS, GIRLS
from grader.resources import load_rubric
from vocab import FEATURES, Recipe, RecipeSampler

JUDGE_LINE = re.compile(
    r"^Grammar: (\d+)/10, Creativity: (\d+)/10, Consistency: (\d+)/10, Plot: (\d+)/10, "
    r"Age group: [A-F] \((3 or under|\d+-\d+)\)$"
)
# The real rubric file, closing sentence and all: its second and third `***` once fooled the
# simulator into grading "." (an earlier copy of turn 1 here left that sentence out).
TURN1, TURN2 = load_rubric().turns


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_prompt_parsing_reads_recipe_and_features() -> None:
    recipe = Recipe("hang", "foot", "cute", ("Dialogue", "BadEnding", "Twist"))
    request = parse_story_request(render_story_prompt(recipe))
    assert request == StoryRequest("hang", "foot", "cute", ("Dialogue", "BadEnding", "Twist"))
    assert parse_story_request("Tell me a joke") is None


@pytest.mark.parametrize("index", range(12))
def test_stories_honour_words_and_features(index: int) -> None:
    recipe = RecipeSampler(feature_probs={f.name: 0.5 for f in FEATURES}).recipe(5, index)
    result = answer(user(render_story_prompt(recipe)), random.Random(index))
    text = result.text
    assert result.kind == "story"
    assert 3 <= len(text.split("\n\n")) <= 7
    for word in (recipe.verb, recipe.noun, recipe.adjective):
        assert re.search(rf"\b{re.escape(word)}\b", text), word
    features = set(recipe.features)
    if "Dialogue" in features:
        assert re.search(r'"[^"]+[.!?,]" (said|asked|shouted)', text)
    assert ("The moral of the story is" in text) == ("MoralValue" in features)
    assert (any(w in text for w in ("cried", "sad", "tears"))) == ("BadEnding" in features)
    if "Twist" in features:
        assert re.search(r"unexpected|surprise|strange", text)
    if "Conflict" in features:
        assert "wanted the" in text and "angry" in text


def test_stories_vary_and_are_deterministic() -> None:
    request = StoryRequest("jump", "ball", "red", ())
    stories = {write_story(request, random.Random(seed)) for seed in range(20)}
    assert len(stories) >= 15
    assert write_story(request, random.Random(3)) == write_story(request, random.Random(3))
    state_a, state_b = (
        SimulatorState(SimulatorConfig(seed=1)),
        SimulatorState(SimulatorConfig(seed=1)),
    )
    messages = user(render_story_prompt(Recipe("jump", "ball", "red", ())))
    first = [answer(messages, state_a.content_rng(messages)).text for _ in range(3)]
    assert first == [answer(messages, state_b.content_rng(messages)).text for _ in range(3)]
    assert len(set(first)) > 1  # the same prompt asked again gets another story


def test_summary_prompt_gets_one_or_two_sentences() -> None:
    story = write_story(StoryRequest("hang", "foot", "cute", ("BadEnding",)), random.Random(0))
    result = answer(user(render_summary_prompt(story)), random.Random(0))
    assert result.kind == "summary"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", result.text) if s]
    assert 1 <= len(sentences) <= 2
    hero = next(w for w in re.findall(r"[A-Z][a-z]+", story) if w in GIRLS + BOYS)
    assert hero in result.text
    assert "sad" in result.text  # the story has a bad ending


def test_judge_turns_follow_the_gpt_eval_format() -> None:
    beginning = "Once upon a time, there was a little girl named Lily. She loved to"
    good = " play in the park with her dog. One day, they found a big red ball. Lily and the dog "
    good += "played all day. In the end, they went home happy."
    messages = user(TURN1.replace("{beginning}", beginning).replace("{completion}", good))
    first = answer(messages, random.Random(0))
    assert first.kind == "judge" and "***" not in first.text and len(first.text) > 20
    messages += [{"role": "assistant", "content": first.text}, *user(TURN2)]
    line = answer(messages, random.Random(0)).text
    match = JUDGE_LINE.match(line)
    assert match, line
    assert all(1 <= int(match.group(i)) <= 10 for i in range(1, 5))


def test_judge_scores_follow_text_quality() -> None:
    beginning = "Tom had a small red boat. He took it to the lake and"
    good = score(
        beginning,
        " put it in the water. The boat sailed far away. Tom ran after it "
        "and laughed. His dad helped him catch the boat. They went home happy.",
    )
    bad = score(beginning, " the the the boat boat boat the the the boat boat boat the the")
    assert good.grammar > bad.grammar and good.creativity > bad.creativity
    assert good.plot > bad.plot
    assert score(beginning, "") == score("", "")  # empty completion: all minimum


def test_answer_in_the_format_template_is_filled() -> None:
    prompt = (
        "Here is an instruction and a story.\nInstruction: Words: dog, run\n***\nThe dog ran "
        "fast. It was happy.\n\nAnswer in the format:\nInstruction following: <score>/10, "
        "Grammar: <score>/10"
    )
    text = answer(user(prompt), random.Random(0)).text
    assert re.fullmatch(r"Instruction following: (\d+)/10, Grammar: (\d+)/10", text), text


def test_other_prompts_get_a_continuation() -> None:
    result = answer(user("Once upon a time, there was a"), random.Random(0))
    assert result.kind == "continuation" and result.text.endswith(".")


def test_latency_is_log_normal_with_configured_median_and_p99() -> None:
    state = SimulatorState(SimulatorConfig(latency_median_s=1.5, latency_p99_s=5.0, seed=0))
    samples = sorted(state.latency() for _ in range(20000))
    assert statistics.median(samples) == pytest.approx(1.5, rel=0.05)
    assert samples[int(0.99 * len(samples))] == pytest.approx(5.0, rel=0.1)


def test_limits_answer_429_with_headers(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rpm=60, burst_s=3.0))  # 1/s, bucket of 3
    body = {"model": "simulator-story-1", "messages": user("Hello there")}
    with httpx.Client(base_url=url) as http:
        answers = [http.post("/chat/completions", json=body) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    for a in answers:
        assert a.headers["x-ratelimit-limit-requests"] == "60"
        assert "x-ratelimit-remaining-requests" in a.headers
        assert "x-ratelimit-reset-requests" in a.headers
    limited = answers[3]
    assert 0 < int(limited.headers["retry-after-ms"]) <= 1000
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_bad_requests_name_the_field(simulator) -> None:
    with httpx.Client(base_url=simulator) as http:
        missing = http.post("/chat/completions", json={"model": "m"})
        not_json = http.post("/chat/completions", content=b"{oops")
        bad_fault = http.post(
            "/chat/completions",
            json={"model": "m", "messages": user("x")},
            headers={"x-simulator-fault": "nope"},
        )
    assert missing.status_code == 400 and "'messages'" in missing.json()["error"]["message"]
    assert not_json.status_code == 400
    assert bad_fault.status_code == 400 and "nope" in bad_fault.json()["error"]["message"]


def test_fault_rates_are_seeded() -> None:
    config = SimulatorConfig(rate_429=0.1, rate_500=0.1, rate_malformed=0.05, seed=9)
    draws = [SimulatorState(config).draw_fault() for _ in range(1)]
    state = SimulatorState(config)
    seq = [state.draw_fault() for _ in range(2000)]
    assert seq[:1] == draws
    assert 0.08 < seq.count("rate_limit") / 2000 < 0.12
    assert 0.03 < seq.count("malformed") / 2000 < 0.07
    assert seq == [s.draw_fault() for s in [SimulatorState(config)] for _ in range(2000)]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="rate_429"):
        SimulatorConfig(rate_429=1.5)
    with pytest.raises(ValueError, match="rpm"):
        SimulatorConfig(rpm=0)
    assert SimulatorConfig.from_dict(SimulatorConfig(rpm=5).to_dict()) == SimulatorConfig(rpm=5)


async def test_slow_server_queues_beyond_capacity_and_counts_abandoned(simulator_factory) -> None:
    # 500 tokens/s per request, 2 at once: six requests at once finish in three waves.
    url = simulator_factory(SimulatorConfig(tokens_per_s=500, capacity=2, seed=3))
    prompt = render_story_prompt(RecipeSampler().recipe(0, 0))
    body = {"model": "simulator-story-1", "messages": user(prompt)}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def timed() -> tuple[float, float]:
            started = time.perf_counter()
            answer = await http.post("/chat/completions", json=body)
            tokens = answer.json()["usage"]["completion_tokens"]
            return time.perf_counter() - started, tokens / 500

        results = await asyncio.gather(*(timed() for _ in range(6)))
        latencies = sorted(latency for latency, _ in results)
        one_story = max(generation for _, generation in results)
        assert latencies[0] >= min(generation for _, generation in results)
        assert latencies[-1] >= 2.5 * statistics.median(g for _, g in results)  # waited 2 waves
        assert latencies[-1] < 3 * one_story + 1.0
        server = (await http.get("/simulator/stats")).json()["server"]
        assert server["max_queued"] == 4 and server["completed"] == 6 and server["abandoned"] == 0
        # A client that gives up while its request is queued: the server still does the work.
        async with httpx.AsyncClient(base_url=url, timeout=0.05) as impatient:
            with pytest.raises(httpx.TimeoutException):
                await impatient.post("/chat/completions", json=body)
        while True:  # until the server has finished what it accepted
            server = (await http.get("/simulator/stats")).json()["server"]
            if server["busy"] == 0 and server["queued"] == 0:
                break
            await asyncio.sleep(0.02)
        assert server["completed"] == 7
        assert server["abandoned"] == 1 and server["abandoned_tokens"] > 0


def test_slow_server_config_is_validated_and_needs_one_worker() -> None:
    with pytest.raises(ValueError, match="tokens_per_s"):
        SimulatorConfig(tokens_per_s=0)
    with pytest.raises(ValueError, match="capacity"):
        SimulatorConfig(capacity=0)
    config = SimulatorConfig(tokens_per_s=20, capacity=4)
    assert SimulatorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="capacity"), run_simulator(config, workers=2):
        pass
