"""Grader throughput and judge-answer parsing.

- generation: `grader.generation.generate` (length-sorted batches through `model.generate`)
  against the fair baseline, plain `model.generate` with the same batch size in prompt order;
- parse_rate: share of the answers in `grader/data/judge_answers.yaml` that state every score
  and parse to exactly the expected numbers;
- judge requests per minute against the simulator's RPM limit.

    python benchmarks/bench_grade.py [--quick]

Last line: `grade: completions_per_s=X ratio_vs_batched_generate=Y parse_rate=Z
judge_achieved_over_limit=W`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path


def build_model(root: Path, hidden: int, layers: int) -> Path:
    """A random GPT-Neo with a BPE tokenizer trained on the packaged evaluation prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, PreTrainedTokenizerFast

    from grader.resources import load_evaluation_prompts

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        load_evaluation_prompts(),
        trainers.BpeTrainer(
            vocab_size=2048,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPTNeoConfig(
        vocab_size=len(fast),
        max_position_embeddings=512,
        hidden_size=hidden,
        num_layers=layers,
        attention_types=[[["global", "local"], layers // 2]],
        num_heads=4,
        window_size=256,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.eos_token_id,
    )
    path = root / "model"
    GPTNeoForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def baseline_batched_generate(lm, prompts: list[str], settings) -> list[int]:
    """The baseline: `model.generate` on consecutive batches of the same size, no sorting."""
    import torch

    from grader.generation import generate_kwargs

    out_tokens = []
    torch.manual_seed(settings.seed)
    eos = lm.tokenizer.eos_token_id
    lm.tokenizer.padding_side = "left"
    for start in range(0, len(prompts), settings.batch_size):
        chunk = [lm.tokenizer.eos_token + p for p in prompts[start : start + settings.batch_size]]
        enc = lm.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(**enc, **generate_kwargs(lm, settings))
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            out_tokens.append(row.index(eos) if eos in row else len(row))
    return out_tokens


def bench_generation(model_dir: Path, n_prompts: int, k: int, new_tokens: int, repeats: int = 3):
    from grader.generation import GenerationSettings, generate
    from grader.models import load_model
    from grader.resources import load_evaluation_prompts

    lm = load_model(model_dir)
    prompts = [p for p in load_evaluation_prompts()[:n_prompts] for _ in range(k)]
    # Same settings for both: temperature 1 sampling, same batch size and token budget.
    settings = GenerationSettings(temperature=1.0, max_new_tokens=new_tokens, batch_size=32)
    generate(lm, prompts[:4], settings)  # warm-up (allocator, kernels)
    # Interleaved repeats, best of each: other processes on a shared CPU add noise, not speed.
    ours_s = base_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = generate(lm, prompts, settings)
        ours_s = min(ours_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        base = baseline_batched_generate(lm, prompts, settings)
        base_s = min(base_s, time.perf_counter() - t0)
    ours_rate = len(ours) / ours_s
    base_rate = len(base) / base_s
    print(
        f"generation: ours {len(ours)} completions in {ours_s:.2f}s "
        f"({ours_rate:.2f}/s, {sum(c.n_tokens for c in ours) / ours_s:.0f} tok/s); "
        f"batched model.generate (batch {settings.batch_size}) {len(base)} in {base_s:.2f}s "
        f"({base_rate:.2f}/s, {sum(base) / base_s:.0f} tok/s)"
    )
    return ours_rate, ours_rate / base_rate


def bench_parsing() -> float:
    """Share of corpus answers that state every score and parse to exactly those numbers."""
    from importlib import resources

    import yaml

    from grader.parsing import CATEGORIES, parse_gpt_eval, parse_template

    corpus = yaml.safe_load(
        resources.files("grader.data").joinpath("judge_answers.yaml").read_text(encoding="utf-8")
    )
    stated = [a for a in corpus["answers"] if a["expect"] is not None]
    right = 0
    t0 = time.perf_counter()
    for a in stated:
        if a["rubric"] == "gpt_eval":
            p = parse_gpt_eval(a["answer"])
            expect = {c: a["expect"][c] for c in CATEGORIES}
            right += p is not None and p.scores == expect and p.age_group == a["expect"]["age"]
        else:
            p = parse_template(a["answer"], "Instruction following: <score>/10")
            right += p is not None and p.scores == a["expect"]
    refused = [a for a in corpus["answers"] if a["expect"] is None]
    wrongly = sum(
        (
            parse_gpt_eval(a["answer"])
            if a["rubric"] == "gpt_eval"
            else parse_template(a["answer"], "Instruction following: <score>/10")
        )
        is not None
        for a in refused
    )
    print(
        f"parsing: {right}/{len(stated)} answers that state their scores parsed exactly "
        f"(corpus {corpus['version']}, {len(corpus['answers'])} answers, "
        f"{len(refused)} without grades, {wrongly} of them misread) in "
        f"{(time.perf_counter() - t0) * 1000:.1f} ms"
    )
    return right / len(stated)


async def _judge_run(base_url: str, rpm: int, seconds: float) -> tuple[int, float]:
    from grader.judge import Judge, gpt_eval_fields
    from grader.judge_client import open_transport
    from grader.resources import load_evaluation_prompts, load_rubric

    prompts = load_evaluation_prompts()
    async with open_transport(
        model="simulator-judge-1", base_url=base_url, api_key="sim", provider="simulator", rpm=rpm
    ) as transport:
        judge = Judge(transport, load_rubric(), cache=None, concurrency=64)
        stop = time.perf_counter() + seconds
        done = 0

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                p = prompts[(w + i) % len(prompts)]
                c = f" she went to play outside with her friend number {w}-{i}."
                await judge.grade(p, c, gpt_eval_fields(p, c), use_cache=False)
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(64)))
        elapsed = time.perf_counter() - t0
        assert judge.stats.parse_failures == 0, judge.stats
        return judge.stats.calls, elapsed


def bench_judge(rpm: int, seconds: float) -> float:
    from generator.simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(rpm=rpm, seed=0), subprocess_mode=True) as base_url:
        calls, elapsed = asyncio.run(_judge_run(base_url, rpm, seconds))
    achieved = calls / elapsed * 60
    print(
        f"judge: {calls} requests in {elapsed:.1f}s = {achieved:.0f}/min against a simulator "
        f"limit of {rpm}/min ({achieved / rpm:.3f})"
    )
    return achieved / rpm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # One thread: tiny matmuls gain little from two, and a shared CPU punishes spinning threads.
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            model_dir = build_model(Path(tmp), hidden=64, layers=2)
            rate, ratio = bench_generation(model_dir, n_prompts=16, k=4, new_tokens=64)
            judge_ratio = bench_judge(rpm=1200, seconds=8)
        else:
            model_dir = build_model(Path(tmp), hidden=256, layers=4)
            rate, ratio = bench_generation(model_dir, n_prompts=44, k=4, new_tokens=128)
            judge_ratio = bench_judge(rpm=3000, seconds=40)
        parse_rate = bench_parsing()
    print(f"total {time.perf_counter() - t0:.1f}s")
    print(
        f"grade: completions_per_s={rate:.2f} ratio_vs_batched_generate={ratio:.2f} "
        f"parse_rate={parse_rate:.3f} judge_achieved_over_limit={judge_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
