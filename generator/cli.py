"""Command-line commands of the generator package: prompt, simulator, generate."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    """One error line; exit 2 for a bad command line, 1 (code=1) when the run itself failed."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def prompt(
    verb: str = typer.Option(..., "--verb", help="Verb the story must use."),
    noun: str = typer.Option(..., "--noun", help="Noun the story must use."),
    adjective: str = typer.Option(..., "--adjective", help="Adjective the story must use."),
    feature: list[str] = typer.Option(
        [], "--feature", help="Story feature (repeatable), e.g. Dialogue."
    ),
    template_version: str | None = typer.Option(None, "--template-version"),
) -> None:
    """Print the rendered story prompt exactly (no trailing newline)."""
    from generator.prompts import DEFAULT_TEMPLATE_VERSION, render_story_prompt
    from vocab import Recipe, feature_by_name

    try:
        for name in feature:
            feature_by_name(name)
        recipe = Recipe(verb=verb, noun=noun, adjective=adjective, features=tuple(feature))
        text = render_story_prompt(recipe, template_version or DEFAULT_TEMPLATE_VERSION)
    except (ValueError, LookupError, OSError) as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(text)
    sys.stdout.flush()


def simulator(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8100, "--port"),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute (429 above)."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute (429 above)."),
    latency_median: float = typer.Option(0.0, "--latency-median", help="Seconds."),
    latency_p99: float | None = typer.Option(None, "--latency-p99", help="Seconds."),
    tokens_per_s: float | None = typer.Option(
        None, "--tokens-per-s", help="Slow server: generation speed per request."
    ),
    capacity: int | None = typer.Option(
        None, "--capacity", help="Slow server: requests generating at once (more queue)."
    ),
    rate_429: float = typer.Option(0.0, "--rate-429"),
    rate_500: float = typer.Option(0.0, "--rate-500"),
    rate_503: float = typer.Option(0.0, "--rate-503"),
    rate_timeout: float = typer.Option(0.0, "--rate-timeout"),
    timeout_hang: float = typer.Option(120.0, "--timeout-hang", help="Seconds a timeout hangs."),
    rate_truncated: float = typer.Option(0.0, "--rate-truncated"),
    rate_refusal: float = typer.Option(0.0, "--rate-refusal"),
    rate_repetition: float = typer.Option(
        0.0, "--rate-repetition", help="Share of stories whose end loops (the repetition check)."
    ),
    rate_malformed: float = typer.Option(0.0, "--rate-malformed"),
    rate_no_choices: float = typer.Option(0.0, "--rate-no-choices"),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", help="Server processes (only without limits)."),
    usage_style: str = typer.Option(
        "openai", "--usage-style", help="Cache hits in usage as openai or deepseek report them."
    ),
) -> None:
    """Run the OpenAI-compatible LLM simulator (a stand-in, not a real model)."""
    from generator.simulator import SimulatorConfig, serve

    if not 0 < port < 65536:
        raise _fail(f"--port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise _fail(f"--workers must be >= 1, got {workers}")
    try:
        config = SimulatorConfig(
            rpm=rpm,
            tpm=tpm,
            latency_median_s=latency_median,
            latency_p99_s=latency_p99,
            tokens_per_s=tokens_per_s,
            capacity=capacity,
            rate_429=rate_429,
            rate_500=rate_500,
            rate_503=rate_503,
            rate_timeout=rate_timeout,
            timeout_hang_s=timeout_hang,
            rate_truncated=rate_truncated,
            rate_refusal=rate_refusal,
            rate_repetition=rate_repetition,
            rate_malformed=rate_malformed,
            rate_no_choices=rate_no_choices,
            seed=seed,
            usage_style=usage_style,
        )
        if workers > 1 and config.single_worker:
            raise ValueError("--rpm/--tpm/--capacity need --workers 1 (each enforces its own)")
    except ValueError as exc:
        message = str(exc).replace("tokens_per_s", "--tokens-per-s").replace("_s ", " ")
        message = message.replace("usage_style", "--usage-style")
        raise _fail(message.replace("rate_", "--rate-")) from None
    typer.echo(
        f"LLM SIMULATOR (not a real model) on http://{host}:{port}/v1 "
        f"rpm={rpm or '-'} tpm={tpm or '-'} latency_median={latency_median}s",
        err=True,
    )
    try:
        serve(config, host=host, port=port, workers=workers)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None


def generate(
    n: int = typer.Option(..., "--n", help="Number of stories."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    model: str | None = typer.Option(
        None, "--model", help="Model name (default: simulator-story-1 / gpt-4o-mini)."
    ),
    concurrency: int = typer.Option(32, "--concurrency", help="Requests in flight at most."),
    seed: int = typer.Option(0, "--seed", help="Recipe sampler seed."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute limit."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute limit."),
    max_tokens: int = typer.Option(1024, "--max-tokens"),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds per request until answers are in (then learned)."
    ),
    max_attempts: int = typer.Option(6, "--max-attempts", help="Attempts per story."),
    price_input: float | None = typer.Option(
        None, "--price-input", help="USD per 1M input tokens of --model (0: a local model)."
    ),
    price_output: float | None = typer.Option(
        None, "--price-output", help="USD per 1M output tokens of --model (0: a local model)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the stories of an earlier run in OUT."
    ),
    vocab: Path | None = typer.Option(
        None,
        "--vocab",
        help="Your own vocabulary (txt/tsv, yaml or json, as `vocab stats --file` reads): "
        "recipes are drawn from it and stories checked against it.",
    ),
) -> None:
    """Generate N stories into OUT/stories.jsonl and OUT/requests.jsonl.

    Refuses an OUT that holds an earlier run's stories (paid for) unless --overwrite.
    Exits 1, saying why, when no story was accepted."""
    from vocab import VocabError, default_vocabulary, load_vocabulary

    if n <= 0:
        raise _fail(f"--n must be a positive number of stories, got {n}")
    if (price_input is None) != (price_output is None):
        raise _fail("give both --price-input and --price-output (USD per 1M tokens; 0 0 is free)")
    for name, price in (("--price-input", price_input), ("--price-output", price_output)):
        if price is not None and price < 0:
            raise _fail(f"{name} must be >= 0 USD per 1M tokens, got {price}")
    if concurrency <= 0:
        raise _fail(f"--concurrency must be >= 1, got {concurrency}")
    for name, value in (
        ("--rpm", rpm),
        ("--tpm", tpm),
        ("--max-tokens", max_tokens),
        ("--max-attempts", max_attempts),
        ("--timeout", timeout),
    ):
        if value is not None and value <= 0:
            raise _fail(f"{name} must be positive, got {value}")
    try:  # before anything is written or started: a bad file is one line
        vocabulary = load_vocabulary(vocab) if vocab is not None else default_vocabulary()
    except VocabError as exc:
        raise _fail(str(exc)) from None
    earlier = out / "stories.jsonl"
    if not overwrite and earlier.is_file() and earlier.stat().st_size > 0:
        raise _fail(
            f"{earlier} holds the stories of an earlier run: choose another --out, or pass "
            "--overwrite to replace them"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _fail(f"cannot write to output directory {out}: {exc.strerror or exc}", 1) from None
    _run_generate(
        n=n,
        out=out,
        model=model,
        concurrency=concurrency,
        seed=seed,
        rpm=rpm,
        tpm=tpm,
        max_tokens=max_tokens,
        timeout=timeout,
        max_attempts=max_attempts,
        prices=None if price_input is None or price_output is None else (price_input, price_output),
        vocabulary=vocabulary,
    )


def _run_generate(
    *,
    n: int,
    out: Path,
    model: str | None,
    concurrency: int,
    seed: int,
    rpm: int | None,
    tpm: int | None,
    max_tokens: int,
    timeout: float,
    max_attempts: int,
    prices: tuple[float, float] | None,
    vocabulary: Any,
) -> None:
    import asyncio
    import contextlib

    from rich.console import Console

    from generator.checks import StoryChecker
    from generator.client import ClientConfig
    from generator.generate import generate_stories
    from generator.pricing import PriceTable, PricingError, UnknownModelPrice, no_price_message
    from generator.progress import Progress
    from generator.ratelimit import ModelLimits
    from generator.retry import RetryPolicy
    from generator.simulator import SimulatorConfig, run_simulator
    from vocab import RecipeSampler, default_vocabulary

    console = Console(stderr=True)
    use_simulator = not os.environ.get("OPENAI_API_KEY") and not os.environ.get("OPENAI_BASE_URL")
    model = model or ("simulator-story-1" if use_simulator else "gpt-4o-mini")
    try:
        pricing = PriceTable.load()
        if prices is not None:
            pricing = pricing.with_prices({model: {"input": prices[0], "output": prices[1]}})
        pricing.cost(model, 0, 0)
    except UnknownModelPrice:
        raise _fail(no_price_message(model, "--price-input 0 --price-output 0")) from None
    except (PricingError, LookupError, OSError) as exc:
        raise _fail(str(exc)) from None

    sampler = RecipeSampler(vocabulary)
    if vocabulary is not default_vocabulary():
        size = vocabulary.identity()
        console.print(
            f"vocabulary {vocabulary.name} ({vocabulary.source}): {size['noun']} nouns, "
            f"{size['verb']} verbs, {size['adjective']} adjectives, sha256 {vocabulary.sha256}",
            highlight=False,
        )
    recipes = [sampler.recipe(seed, i) for i in range(n)]
    limits = ModelLimits(rpm=rpm, tpm=tpm) if (rpm or tpm) else None

    with contextlib.ExitStack() as stack:
        if use_simulator:
            base_url = stack.enter_context(
                run_simulator(
                    SimulatorConfig(
                        rpm=rpm, tpm=tpm, latency_median_s=0.02, latency_p99_s=0.2, seed=seed
                    ),
                    subprocess_mode=True,
                )
            )
            console.print(
                f"[bold red]NO OPENAI_API_KEY SET: using the built-in LLM SIMULATOR at "
                f"{base_url}[/] - stories come from a story grammar, not a real model; "
                "every row says provider=simulator.",
                highlight=False,
            )
            client_config = ClientConfig(
                base_url=base_url, api_key="simulator", timeout_s=timeout, provider="simulator"
            )
        else:
            client_config = ClientConfig.from_env(timeout_s=timeout)
            console.print(
                f"provider: {client_config.provider_name} "
                f"({client_config.base_url or 'https://api.openai.com/v1'}), model {model}",
                highlight=False,
            )
        with Progress("generate", total=n, unit="stories") as progress:
            summary = asyncio.run(
                generate_stories(
                    recipes=recipes,
                    out_dir=out,
                    client_config=client_config,
                    model=model,
                    pricing=pricing,
                    checker=StoryChecker(vocabulary),
                    concurrency=concurrency,
                    limits=limits,
                    max_tokens=max_tokens,
                    retry=RetryPolicy(max_attempts=max_attempts),
                    on_story=lambda _outcome: progress.advance(),
                )
            )
        # The bar and the summary state one rate: the work done over the whole run.
        summary.elapsed_s = progress.elapsed_s()
    typer.echo(f"{summary.line()} out={out} vocabulary={vocabulary.name}")
    why = summary.nothing_accepted()
    if why is not None:
        raise _fail(why, 1)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
    app.command("prompt")(prompt)
    app.command("simulator")(simulator)
    app.command("generate")(generate)
