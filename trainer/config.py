"""The trainer's one settings object: a flat dataclass, built once per run."""

from __future__ import annotations

import dataclasses
import os
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
    # max-autotune: inductor benchmarks GEMM kernels (Triton templates, which can take the bias
    # and gelu into their epilogue, against cuBLAS) and tunes its fused kernels: minutes more
    # compile (`gpu_check.sh mfu` measures what it gives). No CUDA graphs either way.
    compile_mode: Literal["default", "max-autotune"] = "default"
    # The residual stream between blocks: fp32 (autocast's choice: the embeddings are fp32) or
    # bf16 (Megatron's default without --fp32-residual-connection): half the memory traffic of
    # the layer norms and residual adds, part of the memory-bound quarter of a 33M step on an
    # H100. bf16 runs only.
    residual_dtype: Literal["fp32", "bf16"] = "fp32"
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
    "schedule",
    "warmup_steps",
    "seed",
)
