"""A job with its own vocabulary, submitted by `jobs submit --vocab` over the real API and run
by a real worker against the simulator: recipes from the file, stories checked against it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from generator.checks import StoryChecker
from service.cli import jobs_app
from service.store.task_plan import plan_task
from service.work.wiring import run_worker, worker_config
from tests.service.conftest import TEST_TOKEN
from tests.service.test_supervise import live_api
from vocab import default_vocabulary, load_vocabulary

FARM = "name: farm\nnouns: [cow, hen, café]\nverbs: [milk, feed]\nadjectives: [muddy, calm]\n"


@pytest.fixture
def cli_env(monkeypatch, settings):
    def point_at(url: str) -> None:
        monkeypatch.setenv("TINYSTORIES_API_URL", url)
        monkeypatch.setenv("TINYSTORIES_ADMIN_TOKEN", TEST_TOKEN)

    return point_at


async def test_a_custom_vocabulary_job_end_to_end(
    api, settings, simulator_url, sessionmaker, cli_env, tmp_path
) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(FARM)
    farm = load_vocabulary(path)
    with live_api(settings) as url:
        cli_env(url)
        args = ["submit", "--n", "12", "--budget-usd", "5", "--seed", "9", "--vocab", str(path)]
        result = CliRunner().invoke(jobs_app, args)
        assert result.exit_code == 0, result.output
        line = f"vocabulary farm: 3 nouns, 2 verbs, 2 adjectives, sha256 {farm.sha256}"
        assert line in result.stdout.splitlines()
        job_id = result.stdout.split()[1]
        s = settings.model_copy(update={"simulator_base_url": simulator_url})
        await run_worker(
            s,
            config=worker_config(s, idle_exit=True, concurrency=4, poll_s=0.05),
            install_signals=False,
        )
        shown = CliRunner().invoke(jobs_app, ["show", job_id[:8]])
        assert shown.exit_code == 0, shown.output
        assert "  " + line in shown.stdout.splitlines()
    async with sessionmaker() as session:
        stories = (
            await session.execute(
                text(
                    "SELECT s.verb, s.noun, s.adjective, s.text, s.checks, s.finish_reason, "
                    "t.index, t.recipe FROM stories s JOIN tasks t ON t.id = s.task_id "
                    "WHERE s.job_id = :j"
                ),
                {"j": job_id},
            )
        ).all()
        status = (
            await session.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id})
        ).scalar_one()
    assert status == "completed" and len(stories) == 12
    checker = StoryChecker(farm)
    oov: set[str] = set()
    for story in stories:
        assert story.noun in farm.nouns and story.verb in farm.verbs
        assert story.adjective in farm.adjectives
        # Re-derivable from (seed, index) and the stored words alone.
        recipe, _ = plan_task(
            seed=9, index=story.index, feature_probs=None, models=[{"model": "m"}], vocabulary=farm
        )
        assert story.recipe == recipe
        words = [story.verb, story.noun, story.adjective]
        again = checker.check(story.text, finish_reason=story.finish_reason, required_words=words)
        assert story.checks == again.to_dict()
        assert "missing_words" not in story.checks["rejections"]
        oov |= set(story.checks["details"].get("oov_words", []))
    assert {s.noun for s in stories} == set(farm.nouns)
    # Checked against the farm words: the simulator's filler from the packaged list is not in it.
    assert oov & default_vocabulary().words
    # The job's diversity report measures coverage of the words it drew from.
    coverage = (await api.get(f"/v1/jobs/{job_id}/diversity")).json()["recipe_coverage"]
    assert {role: coverage[role]["vocabulary"] for role in coverage} == {
        "verb": 2,
        "noun": 3,
        "adjective": 2,
    }


async def test_a_vocabulary_file_a_job_cannot_use_is_one_line(cli_env, tmp_path) -> None:
    cli_env("http://127.0.0.1:9")  # never reached
    bad = tmp_path / "bad.txt"
    bad.write_text("cow noun\nmilk verb\nmud-dy- adjective\n")
    result = CliRunner().invoke(
        jobs_app, ["submit", "--n", "3", "--budget-usd", "1", "--vocab", str(bad)]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {bad}, line 3: 'mud-dy-' is not a single word (letters, '-' or ''' only)"
    )
    own = tmp_path / "own.yaml"
    own.write_text(FARM + "features: [{name: Animals, phrase: there is an animal}]\n")
    result = CliRunner().invoke(
        jobs_app, ["submit", "--n", "3", "--budget-usd", "1", "--vocab", str(own)]
    )
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "six standard features" in line and "generate --vocab" in line
