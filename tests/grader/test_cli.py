"""End to end through `tinystories grade` with the built-in simulator as judge."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from tinystories.cli import app

FAST = [
    "--k",
    "2",
    "--prompts",
    "3",
    "--max-new-tokens",
    "24",
    "--noise-sample",
    "2",
    "--checkpoint-k",
    "1",
    "--memorization-n",
    "3",
    "--instruct-n",
    "2",
    "--loss-texts",
    "3",
]


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_grade_with_simulator_writes_report_and_rerun_uses_cache(
    model_dir, export_dir, tmp_path, no_key
):
    out = tmp_path / "report"
    args = [
        "grade",
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--data",
        str(export_dir),
        "--instruct",
        "on",
        "--judge-suites",
        *FAST,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "SIMULATOR" in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("graded 1 model(s) (SIMULATOR judge): tiny-64x2: grammar")
    report = json.loads((out / "report.json").read_text())
    m = report["models"][0]
    ge = m["gpt_eval"]
    assert ge["judged"] == 6 and ge["parse_failures"] == 0
    assert len(ge["per_prompt"]) == 3
    g = ge["overall"]["grammar"]
    assert 1 <= g["mean"] <= 10 and g["ci95"][0] <= g["mean"] <= g["ci95"][1]
    assert ge["judge_noise"]["n"] == 2
    assert report["judge"]["simulator"] and report["judge"]["rubric_version"] == "gpt-eval-v2"
    assert "api_key" not in json.dumps(report["judge"])
    assert report["cost"]["requests"] > 0 and report["cost"]["usd"] > 0
    assert m["loss"]["context_length"] == 256 and m["loss"]["bits_per_byte"] > 0
    assert m["memorization"]["n"] == 3
    assert set(m["capability"]["table"]) == {"knowledge", "reasoning", "context_tracking"}
    assert any(r.get("judge_consistency") is not None for r in m["capability"]["rows"])
    ins = m["instruct"]
    assert ins["n"] == 2 and ins["parse_failures"] == 0
    assert 1 <= ins["judge_score"]["mean"] <= 10
    assert 0 <= ins["required_word_share"]["mean"] <= 1
    assert [c["step"] for c in m["checkpoints"]] == [1, 2]
    # The fixture's checkpoints hold the final weights: graded once, not three times.
    assert all(c["same_as_final"] for c in m["checkpoints"])
    assert report["judge"]["temperature"] == 0.0 and report["judge"]["max_tokens"] == 400
    assert m["model"]["context_source"] == "config.json max_position_embeddings"
    assert all(r["judge"] == "SIMULATOR" for r in report["table"])
    for name in (
        "report.md",
        "scores_by_size.png",
        "scores_by_checkpoint.png",
        "attention_tiny-64x2.png",
        "memorization_tiny-64x2.png",
        "neurons_tiny-64x2.md",
    ):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert (
        "| model | params | eval loss | grammar | creativity | consistency | plot | age group |"
        in md
    )
    # Every simulator number carries the mark, with the count it covers next to it.
    assert re.search(r"\| grammar \| \d+\.\d\d \[[\d.]+, [\d.]+\] \(sim\) \(n=6\) \|", md), md
    assert "within the trained context of 256 tokens" in md
    assert "(sim)" in last and "n=6" in last
    rows = [
        json.loads(r) for r in (out / "completions" / "tiny-64x2.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 6 and all(r["judge"] == "SIMULATOR" for r in rows)
    # Every judge answer of the run is in the report directory, raw text and parse result.
    answers = [json.loads(r) for r in (out / "judge_answers.jsonl").read_text().splitlines()]
    gpt_eval = [a for a in answers if a["rubric_version"] == "gpt-eval-v2" and not a["repeat"]]
    assert {a["completion"] for a in gpt_eval} >= {r["completion"] for r in rows}
    assert all(a["raw"] and a["parsed"]["scores"] and a["error"] is None for a in gpt_eval)
    assert len([a for a in answers if a["repeat"] == 1]) == 2  # the judge-noise sample
    instruct_version = report["judge"]["instruct_rubric_version"]
    assert len([a for a in answers if a["rubric_version"] == instruct_version]) == 2

    # Rerun: every completion and judgment (noise sample included) comes from the caches; the
    # only judge request is the preflight.
    res2 = CliRunner().invoke(app, [*args, "--no-checkpoints"])
    assert res2.exit_code == 0, res2.output
    again = json.loads((out / "report.json").read_text())
    assert again["judge_stats"]["cache_hits"] >= 8 and again["cost"]["requests"] == 1
    assert again["models"][0]["gpt_eval"]["overall"]["grammar"]["mean"] == g["mean"]


def test_larger_run_reuses_completions_and_judgments(model_dir, tmp_path, no_key):
    from grader.cache import CompletionCache

    out = tmp_path / "report"
    base = ["grade", "--model", str(model_dir), "--out", str(out), "--suites", "none"]
    base += ["--no-checkpoints", "--max-new-tokens", "16", "--noise-sample", "0"]
    small = CliRunner().invoke(app, [*base, "--k", "2", "--prompts", "2"])
    assert small.exit_code == 0, small.output
    first = CompletionCache(out / "completion_cache.jsonl")
    assert len(first) == 4
    before = {e["key"]: e["text"] for e in first._entries.values()}
    large = CliRunner().invoke(app, [*base, "--k", "3", "--prompts", "3"])
    assert large.exit_code == 0, large.output
    report = json.loads((out / "report.json").read_text())
    assert report["judge_stats"]["cache_hits"] == 4  # the small run's judgments
    assert report["models"][0]["gpt_eval"]["judged"] == 9
    after = CompletionCache(out / "completion_cache.jsonl")
    assert len(after) == 9  # 4 reused + 5 new
    assert all(after.get(k)["text"] == t for k, t in before.items())
    # A different seed is a different sample: nothing reused.
    other = CliRunner().invoke(app, [*base, "--k", "2", "--prompts", "2", "--seed", "1"])
    assert other.exit_code == 0, other.output
    assert len(CompletionCache(out / "completion_cache.jsonl")) == 13


def test_bad_inputs_are_one_line_with_the_right_exit_code(model_dir, export_dir, tmp_path, no_key):
    runner = CliRunner()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "config.json", bare / "config.json")
    no_context = tmp_path / "no-context"
    shutil.copytree(model_dir, no_context, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((no_context / "config.json").read_text())
    del cfg["max_position_embeddings"]
    (no_context / "config.json").write_text(json.dumps(cfg))
    (no_context / "training.json").write_text("{}")
    # Exit 2: the command line is wrong; exit 1: what it points at cannot be graded.
    cases = [
        (["--model", str(bare)], "no tokenizer", 1),
        (["--model", str(model_dir), "--prompts", "0"], "empty", 2),
        (["--model", str(model_dir), "--data", str(tmp_path)], "not an export directory", 1),
        (["--model", str(model_dir), "--suites", "poetry"], "unknown suite", 2),
        (["--model", str(no_context)], "records no training context", 1),
    ]
    for extra, needle, code in cases:
        res = runner.invoke(app, ["grade", "--out", str(tmp_path / "r"), *extra])
        assert res.exit_code == code, (extra, res.output)
        err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert len(err_lines) == 1 and needle in err_lines[0], res.stderr
        assert "Traceback" not in res.output


def test_unreachable_judge_is_one_clear_error(model_dir, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "grade",
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "r"),
            "--judge",
            "gpt-4",
            "--judge-base-url",
            "http://127.0.0.1:9/v1",
            "--judge-api-key",
            "sk-test-secret",
            "--judge-max-attempts",
            "1",
            *FAST,
        ],
    )
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    # Nothing listens on the discard port: refused or timed out, depending on the host.
    assert re.match(
        r"error: judge gpt-4 at http://127.0.0.1:9/v1 failed \((connection|timeout)", lines[0]
    )
    assert "sk-test-secret" not in res.output
    assert "Traceback" not in res.output


def test_openai_compatible_judge_by_url_and_key(model_dir, tmp_path):
    """The non-simulator path: any OpenAI-compatible server given by URL, key checked."""
    from generator.simulator import SimulatorConfig, run_simulator

    out = tmp_path / "r"
    with run_simulator(SimulatorConfig(api_key="sk-judge")) as url:
        base = [
            "grade",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--judge",
            "llama-3-judge",  # a local server's name: no list price
            "--judge-base-url",
            url,
            "--judge-max-attempts",
            "1",
            "--suites",
            "none",
            "--no-checkpoints",
            "--k",
            "1",
            "--prompts",
            "2",
            "--max-new-tokens",
            "16",
            "--noise-sample",
            "1",
        ]
        wrong = CliRunner().invoke(app, [*base, "--judge-api-key", "sk-wrong"])
        assert wrong.exit_code == 1 and "failed (auth" in wrong.stderr
        assert "sk-wrong" not in wrong.output
        res = CliRunner().invoke(app, [*base, "--judge-api-key", "sk-judge"])
    assert res.exit_code == 0, res.output
    assert "SIMULATOR" not in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["judge"]["simulator"] is False
    assert report["models"][0]["gpt_eval"]["judged"] == 2
    assert "sk-judge" not in (out / "report.json").read_text()
    assert "sk-judge" not in (out / "report.md").read_text()
    # The unpriced judge is counted at $0 and the run says how to price it.
    assert report["cost"]["unpriced_models"] == ["llama-3-judge"] and report["cost"]["usd"] == 0
    note = "no price known for llama-3-judge (counted as $0): run with "
    note += "TINYSTORIES_LOCAL_MODELS=llama-3-judge for a local judge"
    assert f"note: {note}" in res.stderr and note in (out / "report.md").read_text()


def test_loss_and_attention_helpers(model_dir, export_dir, tmp_path):
    res = CliRunner().invoke(
        app, ["grade-loss", "--model", str(model_dir), "--data", str(export_dir), "--texts", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "bits/byte" in res.output and "context 256" in res.output
    png = tmp_path / "att.png"
    res = CliRunner().invoke(
        app,
        [
            "grade-attention",
            "--model",
            str(model_dir),
            "--prompt",
            "Once upon a time",
            "--out",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(
        app, ["grade-loss", "--model", str(model_dir), "--data", str(export_dir), "--split", "test"]
    )
    assert bad.exit_code == 1 and "no 'test' split" in bad.stderr


def test_extra_judges_report_their_agreement(model_dir, tmp_path, no_key):
    out = tmp_path / "r"
    args = ["grade", "--model", str(model_dir), "--out", str(out), "--suites", "none"]
    args += ["--no-checkpoints", "--k", "2", "--prompts", "3", "--max-new-tokens", "24"]
    args += ["--noise-sample", "0", "--extra-judge", "simulator-judge-2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    agreement = json.loads((out / "report.json").read_text())["models"][0]["agreement"]
    assert agreement["judges"] == ["simulator-judge-1", "simulator-judge-2"]
    g = agreement["categories"]["grammar"]
    # The simulator's heuristics are deterministic: two simulator judges agree perfectly.
    assert g["alpha"] == 1.0 and g["n"]["simulator-judge-2"] == 6
    assert "Judge agreement (sim)" in (out / "report.md").read_text()


def test_grade_help_keeps_whole_flag_names_at_80_columns():
    import typer

    res = CliRunner().invoke(app, ["grade", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    command = typer.main.get_command(app).commands["grade"]
    flags = [o for p in command.params for o in (*p.opts, *p.secondary_opts)]
    assert "--judge-concurrency" in flags and "--no-rejudge-failures" in flags
    words = set(re.findall(r"--[a-z0-9-]+", res.output))
    assert set(flags) - {"-h"} <= words | {"--help"}, sorted(set(flags) - words)
    assert "…" not in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
