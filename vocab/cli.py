"""Command-line commands of the vocab package."""

from __future__ import annotations

import json
from pathlib import Path

import typer

vocab_app = typer.Typer(help="Child vocabulary and story features.", no_args_is_help=True)


@vocab_app.command("stats")
def stats(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    path: Path | None = typer.Option(
        None, "--file", help="A vocabulary file (txt/yaml/json) instead of the packaged one."
    ),
) -> None:
    """Count the words of each role and list the features."""
    from vocab.vocabulary import VocabError, default_vocabulary, load_vocabulary

    try:
        vocabulary = load_vocabulary(path) if path is not None else default_vocabulary()
    except VocabError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    data = vocabulary.stats()
    if as_json:
        typer.echo(json.dumps(data))
        return
    typer.echo(
        f"{data['noun']} nouns, {data['verb']} verbs, {data['adjective']} adjectives; "
        f"features: {', '.join(data['features'])}"
    )
    typer.echo(f"name {vocabulary.name}, sha256 {vocabulary.sha256}")


@vocab_app.command("sample")
def sample(
    seed: int = typer.Option(0, help="Stream seed."),
    start: int = typer.Option(0, help="First recipe index."),
    count: int = typer.Option(5, "--n", min=1, help="How many recipes."),
    path: Path | None = typer.Option(None, "--file", help="A vocabulary file instead."),
    # The spelling of earlier releases; every count flag is `--n` now.
    count_alias: int | None = typer.Option(None, "--count", min=1, hidden=True),
) -> None:
    """Print recipes of a seeded stream, one JSON object a line."""
    from vocab.sampler import RecipeSampler
    from vocab.vocabulary import VocabError, load_vocabulary

    try:
        vocabulary = load_vocabulary(path) if path is not None else None
    except VocabError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    sampler = RecipeSampler(vocabulary)
    for recipe in sampler.recipes(seed, start, count_alias or count):
        typer.echo(json.dumps(recipe.to_dict()))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
    app.add_typer(vocab_app, name="vocab")
