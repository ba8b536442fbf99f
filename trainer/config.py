"""The trainer's one settings object: a flat dataclass, built once per run."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class TrainerError(ValueError):
    """A user-facing problem with the trainer's input; the message is one clear line."""


class OptionError(TrainerError):
    """An option value that cannot work (the command line is wrong: exit 2, not 1)."""


def default_cache_dir() -> Path:
    """Where tokenizers and pre-tokenized token files are cached between runs."""
    if os.environ.get("TINYSTORIES_CACHE"):
        return Path(os.environ["TINYSTORIES_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinystories"


@dataclass
class TrainConfig:
    data: str = ""  # export directory (has dataset_dict.json)
    out: str = ""  # model directory written by save_pretrained
    preset: str = "1M"
    format: Literal["plain", "instruct"] = "plain"  # plain: `text`; instruct: `instruct_text`
    # An export made with --include-rejected carries an `accepted` column: stories that failed
    # the checks are left out unless this is set (the count goes to the log and training.json).
    include_rejected: bool = False
    # Tokenizer: an existing directory, or a byte-level BPE trained on the train split.
    tokenizer: str | None = None
    vocab_size: int = 10_000  # the paper kept GPT-Neo's 10k most frequent tokens; 4096 as llama2.c
    cache_dir: str | None = None  # None -> default_cache_dir()

    # Batch: 512-token windows as the released models' context. The released 33M card lists
    # batch 80 with 16 accumulation steps; defaults here fit a laptop, raise them on a GPU.
    seq_len: int = 512
    batch_size: int = 16  # per device micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000
    tokens: int | None = None  # token budget; when set it overrides max_steps
    time_limit_s: float | None = None  # stop cleanly (eval + save) after this wall time

    # Optimizer: the released TinyStories-33M hyper-parameters.
    lr: float = 5e-4
    min_lr_ratio: float = 0.1  # cosine decays to 10% of lr (Chinchilla / nanoGPT convention)
    weight_decay: float = 0.1  # on matrices (embeddings too, as nanoGPT); biases, norms free
    beta1: float = 0.9
    beta2: float = 0.95  # 0.95 rather than 0.999: steadier with small batches of short stories
    eps: float = 1e-8
    # The released 33M used a constant rate; cosine ends lower for a fixed, short budget.
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 100  # Adam's moment estimates are noisy at first: ramp up
    grad_clip: float = 1.0  # global-norm clipping; 0 disables

    # Speed.
    device: str = "auto"  # auto -> cuda if available, else cpu
    bf16: bool = True  # bf16 autocast, used on cuda only (CPU bf16 autocast is slower there)
    # None: on for CUDA (kernel fusion, FlexAttention), off on CPU, where a short run does not
    # earn back the compile time. A failed compile falls back to eager with one warning line.
    compile: bool | None = None
    # tuned: inductor benchmarks its fused pointwise and reduction kernels' launch configs
    # (trainer.step.COMPILE_OPTIONS says why not the GEMMs); gpu_check.sh mfu measures it when
    # GPU_CHECK_MFU_ONLY names its run.
    compile_mode: Literal["default", "tuned"] = "default"
    # The residual stream between blocks: fp32 (autocast's choice: the embeddings are fp32) or
    # bf16 (Megatron's default without --fp32-residual-connection): half the memory traffic of
    # the layer norms and residual adds, 1.07x a whole 33M step on an H100 with the same
    # validation loss (benchmarks/RESULTS.md). auto = bf16 where it applies (a bf16 CUDA run of
    # the GPT-Neo fast path), else fp32.
    residual_dtype: Literal["auto", "fp32", "bf16"] = "auto"
    fast_attention: bool = True  # SDPA training forward for GPT-Neo (transformers only has eager)
    # GPT-Neo local layers: flash = flash-attention's sliding window (CUDA, bf16, torch >= 2.11);
    # flex = FlexAttention sliding window (fused, skips masked blocks, slow uncompiled);
    # sdpa = SDPA with a band mask; auto = flash where it runs and matches the band mask on the
    # card, else flex when compiling on CUDA, else sdpa.
    local_attention: Literal["auto", "flash", "flex", "sdpa"] = "auto"
    prefetch: int = 4  # batches made ahead on a thread (CUDA only; 0 = in the loop)
    threads: int | None = None  # CPU intra-op threads; None leaves torch's default

    # Evaluation, logging and checkpoints.
    eval_every: int = 200  # steps between validation passes
    # Periodic passes score a seeded sample of about this many validation tokens (the same
    # windows each pass; None = the whole split). The final pass scores the whole split unless
    # final_eval_tokens says otherwise; both are stated in training.json.
    eval_tokens: int | None = 65_536
    final_eval_tokens: int | None = None
    log_every: int = 10  # steps between loss reads; the only host syncs of the loop
    checkpoint_every: int = 500  # steps between resumable checkpoints
    keep_checkpoints: int = 2  # older step-N directories are deleted
    resume: bool = True  # continue from the newest checkpoint under out/checkpoints
    seed: int = 1337
    peak_flops: float | None = None  # accelerator peak for MFU; None -> trainer.device table

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# A checkpoint can only continue a run whose model, data stream and optimisation agree with it.
RESUME_KEYS: tuple[str, ...] = (
    "preset",
    "format",
    "vocab_size",
    "seq_len",
    "batch_size",
    "grad_accum",
    "lr",
    "min_lr_ratio",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
    "schedule",
    "warmup_steps",
    "grad_clip",
    "include_rejected",
    "seed",
)

CHOICES: dict[str, tuple[str, ...]] = {
    "format": ("plain", "instruct"),
    "schedule": ("cosine", "constant"),
    "local_attention": ("auto", "flash", "flex", "sdpa"),
    "compile_mode": ("default", "tuned"),
    "residual_dtype": ("auto", "fp32", "bf16"),
}
AT_LEAST_ONE = (
    *("seq_len", "batch_size", "grad_accum", "max_steps"),
    *("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"),  # periods divide
)
AT_LEAST_ONE_IF_SET = ("tokens", "eval_tokens", "final_eval_tokens", "threads")


def residual_stream(cfg: TrainConfig, *, arch: str, cuda: bool) -> str:
    """The residual stream's dtype this run trains with: `cfg.residual_dtype` with auto resolved."""
    if cfg.residual_dtype != "auto":
        return cfg.residual_dtype
    return "bf16" if cfg.bf16 and cuda and arch == "gpt_neo" and cfg.fast_attention else "fp32"


def choice_problem(name: str, value: object, *, label: str | None = None) -> str | None:
    """Why `value` is not one of option `name`'s CHOICES (None when it is), named as `label`."""
    choices = CHOICES[name]
    if value in choices:
        return None
    return f"{label or name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}"


def check_options(cfg: TrainConfig) -> None:
    """Option values that cannot work, refused as one OptionError line before any data is read.

    The CLI and the Python API both come through here, so a value the command line would
    refuse cannot reach the loop from code either (a zero period divides, a negative rate
    trains backwards).
    """
    for name in CHOICES:
        problem = choice_problem(name, getattr(cfg, name))
        if problem:
            raise OptionError(problem)
    for name in AT_LEAST_ONE:
        _whole(name, getattr(cfg, name), low=1)
    for name in AT_LEAST_ONE_IF_SET:
        if getattr(cfg, name) is not None:
            _whole(name, getattr(cfg, name), low=1)
    _whole("warmup_steps", cfg.warmup_steps, low=0)
    _whole("prefetch", cfg.prefetch, low=0)
    if not cfg.out:
        raise OptionError("out must name the model directory to write")
    _number("lr", cfg.lr, "> 0", lambda v: v > 0)
    _number("eps", cfg.eps, "> 0", lambda v: v > 0)
    _number("weight_decay", cfg.weight_decay, ">= 0", lambda v: v >= 0)
    _number("grad_clip", cfg.grad_clip, ">= 0 (0 disables it)", lambda v: v >= 0)
    _number("min_lr_ratio", cfg.min_lr_ratio, "between 0 and 1", lambda v: 0 <= v <= 1)
    for name in ("beta1", "beta2"):
        _number(name, getattr(cfg, name), "in [0, 1)", lambda v: 0 <= v < 1)
    if cfg.time_limit_s is not None:
        _number("time_limit_s", cfg.time_limit_s, ">= 0", lambda v: v >= 0)


def _whole(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(f"{name} must be a whole number >= {low}, not {value!r}")


def _number(name: str, value: Any, rule: str, ok: Callable[[float], bool]) -> None:
    # NaN fails every comparison, and an infinite rate or clip is no setting either.
    if not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise OptionError(f"{name} must be {rule}, not {value!r}")
