"""`tinystories prompt`, `generate` and `simulator` through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from generator import cli
from generator.prompts import render_story_prompt
from generator.simulator import SimulatorConfig
from vocab import Recipe

app = typer.Typer()
cli.register(app)
runner = CliRunner()


@pytest.fixture
def no_provider_env(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_prompt_prints_the_exact_prompt() -> None:
    args = ["prompt", "--verb", "hang", "--noun", "foot", "--adjective", "cute"]
    result = runner.invoke(app, [*args, "--feature", "Dialogue", "--feature", "Twist"])
    assert result.exit_code == 0
    expected = render_story_prompt(Recipe("hang", "foot", "cute", ("Dialogue", "Twist")))
    assert result.stdout == expected and not result.stdout.endswith("\n")


def test_prompt_unknown_feature_is_one_error_line() -> None:
    args = ["prompt", "--verb", "hang", "--noun", "foot", "--adjective", "cute"]
    result = runner.invoke(app, [*args, "--feature", "Sparkles"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Sparkles" in lines[0] and "Dialogue" in lines[0]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_with_the_builtin_simulator(tmp_path, no_provider_env) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["generate", "--n", "12", "--out", str(out), "--seed", "4"])
    assert result.exit_code == 0, result.stderr
    assert "SIMULATOR" in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("generate: stories=12 accepted=")
    stories = read_jsonl(out / "stories.jsonl")
    requests = read_jsonl(out / "requests.jsonl")
    assert sorted(s["index"] for s in stories) == list(range(12))
    for row in stories:
        assert row["provider"] == "simulator" and row["model"] == "simulator-story-1"
        assert row["recipe"]["verb"] in row["prompt"] and row["text"]
        assert row["usage"]["prompt_tokens"] > 0 and row["cost_usd"] > 0
        assert row["checks"]["accepted"] == row["accepted"]
        assert row["finish_reason"] == "stop" and row["latency_s"] >= 0
    assert len(requests) == 12 and all(r["outcome"] == "ok" for r in requests)
    accepted = sum(r["accepted"] for r in stories)
    assert f"accepted={accepted} " in summary and accepted >= 10
    # A second run into the same directory would replace stories already paid for.
    again = runner.invoke(app, ["generate", "--n", "2", "--out", str(out)])
    assert again.exit_code == 2
    (line,) = again.stderr.strip().splitlines()
    assert "earlier run" in line and "--overwrite" in line
    assert len(read_jsonl(out / "stories.jsonl")) == 12
    replaced = runner.invoke(app, ["generate", "--n", "2", "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.stderr
    assert len(read_jsonl(out / "stories.jsonl")) == 2


def test_generate_against_a_configured_provider_survives_failures(
    tmp_path, monkeypatch, simulator_factory
) -> None:
    url = simulator_factory(SimulatorConfig(rate_503=0.4, rate_refusal=0.2, seed=2))
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test")
    out = tmp_path / "real"
    args = ["generate", "--n", "20", "--out", str(out), "--max-attempts", "1"]
    result = runner.invoke(app, [*args, "--model", "gpt-4o-mini", "--concurrency", "4"])
    assert result.exit_code == 0, result.stderr
    assert "SIMULATOR" not in result.stderr and "sk-secret-test" not in result.output
    stories = read_jsonl(out / "stories.jsonl")
    assert len(stories) == 20
    failed = [s for s in stories if s["error_class"] == "server_error"]
    refused = [s for s in stories if s["checks"] and "refusal" in s["checks"]["rejections"]]
    assert failed and refused and any(s["accepted"] for s in stories)
    assert all(s["text"] is None and not s["accepted"] for s in failed)
    summary = result.stdout.strip().splitlines()[-1]
    assert f"failed={len(failed)} (server_error={len(failed)})" in summary
    assert "refusal=" in summary
    assert "sk-secret-test" not in (out / "requests.jsonl").read_text()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--n", "0"], "--n"),
        (["--n", "3", "--concurrency", "0"], "--concurrency"),
        (["--n", "3", "--model", "no-such-model"], "no-such-model"),
    ],
)
def test_generate_bad_input(tmp_path, no_provider_env, args, words) -> None:
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]


def test_generate_unwritable_dir(tmp_path, no_provider_env) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["generate", "--n", "2", "--out", str(blocker / "sub")])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot write" in result.stderr


def test_simulator_command_rejects_bad_options() -> None:
    result = runner.invoke(app, ["simulator", "--rate-429", "2"])
    assert result.exit_code == 2 and "rate-429" in result.stderr
    result = runner.invoke(app, ["simulator", "--rpm", "10", "--workers", "2"])
    assert result.exit_code == 2 and "--workers 1" in result.stderr
    result = runner.invoke(app, ["simulator", "--usage-style", "anthropic"])
    assert result.exit_code == 2 and "--usage-style must be one of" in result.stderr


def test_simulator_command_serves_until_stopped() -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    code = "from tinystories.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "simulator", "--port", str(port), "--rpm", "100"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert all("simulator" in m["owned_by"] for m in models["data"])
        body = {"model": "simulator-story-1", "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=5)
        assert answer.headers["x-ratelimit-limit-requests"] == "100"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "SIMULATOR (not a real model)" in err


def test_generate_prices_a_local_model_from_the_command_line(
    tmp_path, monkeypatch, simulator_factory
) -> None:
    # A local server (llama.cpp, vLLM) under a model name the price table does not know.
    monkeypatch.setenv("OPENAI_BASE_URL", simulator_factory(SimulatorConfig(seed=3)))
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    monkeypatch.delenv("TINYSTORIES_LOCAL_MODELS", raising=False)
    monkeypatch.delenv("TINYSTORIES_PRICING", raising=False)
    base = ["generate", "--n", "3", "--model", "llama-3.2-3b-q4"]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "'llama-3.2-3b-q4'" in line and "--price-input 0 --price-output 0" in line
    assert "TINYSTORIES_LOCAL_MODELS=llama-3.2-3b-q4" in line
    free = runner.invoke(
        app, [*base, "--out", str(tmp_path / "b"), "--price-input", "0", "--price-output", "0"]
    )
    assert free.exit_code == 0, free.stderr
    stories = read_jsonl(tmp_path / "b" / "stories.jsonl")
    assert len(stories) == 3 and all(s["cost_usd"] == 0 for s in stories)
    assert "cost_usd=0.0000" in free.stdout
    paid = runner.invoke(
        app, [*base, "--out", str(tmp_path / "c"), "--price-input", "1", "--price-output", "2"]
    )
    assert paid.exit_code == 0, paid.stderr
    rows = read_jsonl(tmp_path / "c" / "stories.jsonl")
    for row in rows:
        usage = row["usage"]
        expected = (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6
        assert row["cost_usd"] == pytest.approx(expected)
    # Declared local in the environment: no flags needed.
    monkeypatch.setenv("TINYSTORIES_LOCAL_MODELS", "other-model,llama-3.2-3b-q4")
    env_free = runner.invoke(app, [*base, "--out", str(tmp_path / "d")])
    assert env_free.exit_code == 0, env_free.stderr
    assert all(s["cost_usd"] == 0 for s in read_jsonl(tmp_path / "d" / "stories.jsonl"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--price-input", "0"], "give both --price-input and --price-output"),
        (["--price-input", "-1", "--price-output", "0"], "--price-input must be >= 0"),
    ],
)
def test_generate_bad_prices(tmp_path, no_provider_env, args, words) -> None:
    result = runner.invoke(app, ["generate", "--n", "2", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert words in line


def _generate_against(simulator_factory, monkeypatch, out: Path, config, n: int):
    """`generate --n N` against a simulator started with `config`."""
    monkeypatch.setenv("OPENAI_BASE_URL", simulator_factory(config))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = ["generate", "--n", str(n), "--out", str(out), "--model", "gpt-4o-mini"]
    return runner.invoke(app, args)


def test_generate_with_nothing_accepted_exits_1_and_says_why(
    tmp_path, monkeypatch, simulator_factory
) -> None:
    config = SimulatorConfig(rate_refusal=1.0, seed=5)
    result = _generate_against(simulator_factory, monkeypatch, tmp_path / "r", config, 6)
    assert result.exit_code == 1
    assert result.stdout.startswith("generate: stories=6 accepted=0 rejected=6")
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: no story was accepted of 6: 6 rejected by the checks (")
    assert "refusal 6" in line
    # Every story is still written, for a look at what came back.
    assert len(read_jsonl(tmp_path / "r" / "stories.jsonl")) == 6


def test_looping_stories_are_rejected_by_the_repetition_check(
    tmp_path, monkeypatch, simulator_factory
) -> None:
    config = SimulatorConfig(rate_repetition=1.0, seed=6)
    result = _generate_against(simulator_factory, monkeypatch, tmp_path / "r", config, 5)
    assert result.exit_code == 1 and "repetition 5" in result.stderr
    for story in read_jsonl(tmp_path / "r" / "stories.jsonl"):
        assert "repetition" in story["checks"]["rejections"], story["checks"]
        assert story["checks"]["details"]["repeated_share"] > 0.4


def test_generate_with_every_request_failing_names_the_failure(
    tmp_path, monkeypatch, simulator_factory
) -> None:
    url = simulator_factory(SimulatorConfig(rate_500=1.0, seed=5))
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = ["generate", "--n", "4", "--out", str(tmp_path / "f"), "--model", "gpt-4o-mini"]
    result = runner.invoke(app, [*args, "--max-attempts", "1"])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no story was accepted of 4: 4 failed (server_error 4: ")
    assert "sk-test" not in result.output


def test_summary_rate_matches_the_work_over_the_run() -> None:
    from generator.generate import GenerateSummary

    summary = GenerateSummary(stories=10, accepted=9, rejected=1, elapsed_s=390.0)
    assert summary.line().endswith("rate=1.5 stories/min")
    assert summary.nothing_accepted() is None
