"""Training throughput: our loop (trainer.train) against two baselines, same model and batch.

Baselines: transformers.Trainer (what a user gets: GPT-Neo's eager attention) and a plain
PyTorch loop with our SDPA attention forward, the usual full-logits cross-entropy, fused AdamW
and a cosine schedule (the best a short hand-written loop does). All sides train the same preset
from the same initial weights on the same pre-tokenized stories, with clipping 1.0 and the same
batch x sequence length; `--compile` compiles every side. Tokens per second are timed over the
steps after a warmup (no setup, no final save). The last line is the headline.

    python benchmarks/bench_train.py --quick                       # CPU, < 1 min
    python benchmarks/bench_train.py --quick --compile             # CPU, compile on, ~3 min
    python benchmarks/bench_train.py --preset 33M --bf16 --compile --steps 200 --batch-size 64
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORIES = ROOT / "tests" / "trainer" / "data" / "tinystories-300.txt"


def make_export(path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    stories = [s.strip() for s in STORIES.read_text().split("<|endoftext|>") if s.strip()]
    rows = [{"text": s, "instruct_text": f"Story: \n\n{s}"} for s in stories]
    DatasetDict(
        {"train": Dataset.from_list(rows[:270]), "validation": Dataset.from_list(rows[270:])}
    ).save_to_disk(str(path))
    return path


class Timer:
    """Step times after `warmup`. On CPU the median step (robust to other processes sharing
    the cores); on GPU the total, synchronised at both ends so queued kernels are counted."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.marks: list[tuple[int, float]] = []

    def mark(self, step: int) -> None:
        if step < self.warmup:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.marks.append((step, time.perf_counter()))

    def tokens_per_s(self, tokens_per_step: int) -> float:
        assert len(self.marks) >= 2, "too few steps to time"
        if self.device.type == "cuda":
            (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
            return (s1 - s0) * tokens_per_step / (t1 - t0)
        steps = [b[1] - a[1] for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return tokens_per_step / statistics.median(steps)


def run_ours(args, export: Path, out: Path, cache: Path, device: torch.device):
    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = TrainConfig(
        data=str(export),
        out=str(out),
        preset=args.preset,
        vocab_size=args.vocab_size,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_steps=args.steps,
        warmup_steps=10,
        eval_every=10**9,
        checkpoint_every=10**9,
        log_every=args.steps,
        eval_tokens=args.seq_len * args.batch_size * 4,
        cache_dir=str(cache),
        device=str(device),
        bf16=args.bf16,
        compile=args.compile,
        seed=0,
        resume=False,
    )
    timer = Timer(args.warmup, device)
    result = train(cfg, on_step=lambda info: timer.mark(info.step))
    return timer.tokens_per_s(args.batch_size * args.seq_len), result, cfg


def train_tokens(cfg):
    from trainer.prepare import prepare_data

    data = prepare_data(cfg)  # the cache the run of ours filled
    return data.train.tokens, data.tokenizer


def run_plain(args, cfg, device: torch.device) -> float:
    """A plain loop: our SDPA forward, logits + cross_entropy, fused AdamW, cosine, clipping."""
    import math

    import numpy as np
    import torch.nn.functional as F

    from trainer.model import LossModel, build_model
    from trainer.presets import get_preset

    tokens, tok = train_tokens(cfg)
    model = build_model(
        get_preset(cfg.preset),
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        seed=cfg.seed,
        context=cfg.seq_len,
    ).to(device)
    neo = LossModel(model)

    def loss_fn(window: torch.Tensor) -> torch.Tensor:
        x, y = window[:, :-1], window[:, 1:]
        logits = model.lm_head(neo._neo_hidden(x))
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    step_fn = torch.compile(loss_fn) if args.compile else loss_fn
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=0.1, fused=True
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    bf16 = args.bf16 and device.type == "cuda"
    rng = np.random.default_rng(0)
    offsets = np.arange(cfg.seq_len + 1)
    timer = Timer(args.warmup, device)
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, tokens.shape[0] - cfg.seq_len, size=args.batch_size)
        window = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn(window)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.steps == 0:
            loss.item()
        timer.mark(step)
    return timer.tokens_per_s(args.batch_size * cfg.seq_len)


def run_hf(args, cfg, out: Path, device: torch.device) -> float:
    import numpy as np
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainer.model import build_model
    from trainer.presets import get_preset

    tokens, tok = train_tokens(cfg)
    model = build_model(
        get_preset(cfg.preset),
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        seed=cfg.seed,
        context=cfg.seq_len,
    )
    n_windows = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    starts = rng.integers(0, tokens.shape[0] - cfg.seq_len, size=n_windows)

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n_windows

        def __getitem__(self, i: int) -> dict:
            ids = torch.from_numpy(tokens[starts[i] : starts[i] + cfg.seq_len].astype(np.int64))
            return {"input_ids": ids, "labels": ids}

    timer = Timer(args.warmup, device)

    class Clock(TrainerCallback):
        def on_step_end(self, _args, state, _control, **_kw):
            timer.mark(state.global_step)

    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.beta1,
        adam_beta2=cfg.beta2,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        max_grad_norm=1.0,
        bf16=args.bf16 and device.type == "cuda",
        use_cpu=device.type == "cpu",
        logging_steps=args.steps,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        torch_compile=args.compile,
    )
    Trainer(model=model, args=targs, train_dataset=Windows(), callbacks=[Clock()]).train()
    return timer.tokens_per_s(args.batch_size * cfg.seq_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized run, < 45 s")
    parser.add_argument("--preset", default="1M")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every side")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cpu = device.type == "cpu"
    args.steps = args.steps or (10 if args.quick else 30 if cpu else 200)
    args.warmup = args.warmup if args.warmup is not None else (2 if cpu else 20)
    args.batch_size = args.batch_size or (8 if cpu else 32)
    # One CPU thread by default: on a small shared machine OpenMP spin-waiting makes
    # multi-threaded timings swing by several x; both sides always get the same count.
    torch.set_num_threads(args.threads or (1 if cpu else torch.get_num_threads()))
    logging.basicConfig(level=logging.WARNING)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export = make_export(base / "export")
        ours, result, cfg = run_ours(args, export, base / "ours", base / "cache", device)
        plain = run_plain(args, cfg, device)
        hf = run_hf(args, cfg, base / "hf", device)
    mfu_value = result.steady_mfu or result.mfu
    mfu = f" mfu={mfu_value:.3f}" if mfu_value else ""
    print(
        f"preset={args.preset} params={result.params:,} batch={args.batch_size} "
        f"seq_len={args.seq_len} steps={args.steps} (timed {args.steps - args.warmup}) "
        f"threads={torch.get_num_threads()} bf16={args.bf16 and not cpu} compile={args.compile}"
    )
    print(
        f"ours: tokens_per_s={ours:,.0f}{mfu} val_loss={result.val_loss:.4f} "
        f"tokens_seen={result.tokens_seen:,}"
    )
    print(f"plain PyTorch loop (SDPA, full logits): tokens_per_s={plain:,.0f}")
    print(f"transformers Trainer: tokens_per_s={hf:,.0f}")
    print(
        f"train: tokens_per_s={ours:.0f} ratio_vs_hf_trainer={ours / hf:.2f} "
        f"ratio_vs_plain_loop={ours / plain:.2f} device={device.type} "
        f"mfu={f'{mfu_value:.3f}' if mfu_value else 'na'}"
    )


if __name__ == "__main__":
    main()
