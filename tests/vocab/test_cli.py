"""`tinystories vocab ...` commands."""

import json

import typer
from typer.testing import CliRunner

from vocab import default_vocabulary
from vocab.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Root."""

    register(app)
    return app


def test_stats_json():
    result = CliRunner().invoke(_app(), ["vocab", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('{"noun": ') and result.stdout.endswith("]}\n")
    data = json.loads(result.stdout)
    vocabulary = default_vocabulary()
    assert data == {
        "noun": len(vocabulary.nouns),
        "verb": len(vocabulary.verbs),
        "adjective": len(vocabulary.adjectives),
        "features": ["Dialogue", "BadEnding", "MoralValue", "Foreshadowing", "Twist", "Conflict"],
    }


def test_stats_of_bad_file_is_one_error_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("cow noun\nmilk verbb\n")
    result = CliRunner().invoke(_app(), ["vocab", "stats", "--file", str(path)])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"error: {path}, line 2: unknown role 'verbb' "
        "(roles: noun, verb, adjective)"
    )
    assert "Traceback" not in result.output


def test_sample_prints_seeded_recipes():
    first = CliRunner().invoke(_app(), ["vocab", "sample", "--seed", "3", "--count", "3"])
    again = CliRunner().invoke(
        _app(), ["vocab", "sample", "--seed", "3", "--start", "2", "--count", "1"]
    )
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[2]) == json.loads(again.stdout)
