"""The training loop: AdamW, warmup + cosine, accumulation, clipping, bf16, DDP, exact resume."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint as ckpt
from trainer.config import TrainConfig, TrainerError
from trainer.data import (
    COLUMNS,
    WindowSampler,
    eval_windows,
    export_fingerprint,
    load_export,
    pretokenize,
)
from trainer.model import LossModel, build_model, flops_per_token, peak_flops, resolve_device
from trainer.optim import lr_factor, make_optimizer
from trainer.output import bits_per_byte, plot_curves, read_metrics, write_card, write_metrics
from trainer.presets import get_preset, param_counts
from trainer.tokenizer import prepare_tokenizer, tokenizer_hash

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    step: int
    max_steps: int
    loss: float | None  # set on logging steps only (reading it syncs the device)
    val_loss: float | None
    tokens_per_s: float | None
    lr: float


@dataclass
class TrainResult:
    out: Path
    steps: int
    tokens_seen: int
    train_loss: float | None
    val_loss: float
    bits_per_byte: float
    tokens_per_s: float
    mfu: float | None
    elapsed_s: float
    stopped: str  # max_steps | time_limit
    resumed_from: int | None
    params: int
    params_non_embedding: int


def _evaluate(lm: LossModel, windows: torch.Tensor, *, batch: int, device, autocast) -> float:
    lm.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad(), autocast():
        for i in range(0, windows.shape[0], batch):
            chunk = windows[i : i + batch].to(device, non_blocking=True)
            total += lm(chunk).float() * chunk.shape[0]
    lm.train()
    return total.item() / windows.shape[0]


def train(cfg: TrainConfig, *, on_step: Callable[[StepInfo], None] | None = None) -> TrainResult:
    """Train `cfg.preset` on the export at `cfg.data`; write the model directory `cfg.out`."""
    preset = get_preset(cfg.preset)
    if cfg.seq_len > preset.context:
        raise TrainerError(
            f"seq_len {cfg.seq_len} is longer than the model's {preset.context} positions "
            f"(preset {preset.name})"
        )
    if min(cfg.seq_len, cfg.batch_size, cfg.grad_accum, cfg.max_steps) < 1:
        raise TrainerError("seq_len, batch_size, grad_accum and max_steps must be >= 1")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    is_main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = load_export(cfg.data, fmt=cfg.format)
    column = COLUMNS[cfg.format]
    fps = {s: export_fingerprint(cfg.data, ds, s) for s in ("train", "validation")}
    if world > 1 and not is_main:  # rank 0 fills the caches first
        torch.distributed.barrier()
    tokenizer = prepare_tokenizer(cfg, ds, fps["train"])
    tok_hash = tokenizer_hash(tokenizer)
    cache = cfg.resolved_cache_dir()
    data = {
        s: pretokenize(
            ds[s],
            column=column,
            tokenizer=tokenizer,
            cache_dir=cache,
            key=f"{fps[s]}-{column}-{tok_hash}",
        )
        for s in ("train", "validation")
    }
    if world > 1 and is_main:
        torch.distributed.barrier()

    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
    max_steps = math.ceil(cfg.tokens / tokens_per_step) if cfg.tokens else cfg.max_steps
    model = build_model(
        preset, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id, seed=cfg.seed
    )
    n_params, n_non_embed = param_counts(model)
    model.to(device)
    lm = LossModel(model, fast_attention=cfg.fast_attention)
    optimizer = make_optimizer(lm, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, max_steps))
    sampler = WindowSampler(
        data["train"].tokens,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        seed=cfg.seed + 1000 * rank,
    )
    val_windows = eval_windows(
        data["validation"].tokens, seq_len=cfg.seq_len, max_tokens=cfg.eval_tokens
    )

    # What a checkpoint must agree on besides the config keys: the data and the tokenizer.
    identity = {"tokenizer_hash": tok_hash, "train_fingerprint": fps["train"], "world": world}
    step, tokens_seen, elapsed_before, resumed_from = 0, 0, 0.0, None
    rows: list[dict[str, Any]] = []
    latest = ckpt.latest_checkpoint(out) if cfg.resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, config=cfg, fingerprint=identity)
        ckpt.load_weights(model, latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = torch.load(latest / f"rng-rank{rank}.pt", map_location="cpu", weights_only=False)
        sampler.load_state_dict(ckpt.restore_rng(rng))
        step = resumed_from = state["step"]
        tokens_seen, elapsed_before = state["tokens_seen"], state["elapsed_s"]
        rows = read_metrics(out / "metrics.csv", up_to_step=step)
        log.info("resumed step=%d path=%s", step, latest)

    train_lm: torch.nn.Module = lm
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_lm = DistributedDataParallel(
            lm, device_ids=[device.index] if device.index is not None else None
        )
    if cfg.compile:
        train_lm = torch.compile(train_lm)
    use_bf16 = cfg.bf16 and device.type == "cuda"

    def autocast() -> Any:
        if use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    peak = cfg.peak_flops or peak_flops(device)
    fpt = flops_per_token(model, non_embedding_params=n_non_embed, seq_len=cfg.seq_len)
    loss_sum = torch.zeros((), device=device)
    micro_count, window_tokens, last_loss, mfu, tok_s = 0, 0, None, None, 0.0
    val_loss: float | None = None
    t_start = t_log = time.perf_counter()
    paused = total_paused = 0.0  # seconds spent in evaluation and checkpoints
    stopped = "max_steps"
    last_saved = step

    def save() -> None:
        extra = {
            "tokens_seen": tokens_seen,
            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            **identity,
        }
        ckpt.save_checkpoint(
            out=out,
            step=step,
            model=model,
            tokenizer=tokenizer,
            optimizer=optimizer,
            scheduler=scheduler,
            config=cfg,
            extra=extra,
            rank_rng=ckpt.rng_state(sampler.state_dict()),
            rank=rank,
            is_main=is_main,
        )
        if world > 1:
            torch.distributed.barrier()

    def log_row() -> float:
        """Read the mean loss since the last log: the loop's only host sync."""
        nonlocal micro_count, window_tokens, t_log, paused, tok_s, mfu, last_loss
        last_loss = loss_sum.item() / micro_count
        now = time.perf_counter()
        tok_s = window_tokens / max(now - t_log - paused, 1e-9)  # evals and saves excluded
        mfu = fpt * tok_s / peak if peak else None
        loss_sum.zero_()
        micro_count, window_tokens, t_log, paused = 0, 0, now, 0.0
        rows.append(
            {
                "step": step,
                "tokens": tokens_seen,
                "train_loss": f"{last_loss:.5f}",
                "lr": f"{scheduler.get_last_lr()[0]:.3e}",
                "tokens_per_s": f"{tok_s:.0f}",
                "mfu": f"{mfu:.4f}" if mfu else "",
                "elapsed_s": f"{elapsed_before + now - t_start:.1f}",
            }
        )
        log.info(
            "train step=%d loss=%.4f tokens_per_s=%.0f mfu=%s",
            step,
            last_loss,
            tok_s,
            f"{mfu:.3f}" if mfu else "-",
        )
        return last_loss

    def out_of_time() -> bool:
        if cfg.time_limit_s is None:
            return False
        over = time.perf_counter() - t_start >= cfg.time_limit_s
        if world == 1:
            return over
        if step % cfg.log_every:  # ranks agree at logging steps only: no extra syncs
            return False
        flag = torch.tensor([float(over)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    lm.train()
    while step < max_steps:
        if out_of_time():
            stopped = "time_limit"
            break
        for micro in range(cfg.grad_accum):
            window = sampler.next()
            if device.type == "cuda":  # pinned host memory lets the copy overlap compute
                window = window.pin_memory()
            window = window.to(device, non_blocking=True)
            sync_ctx = (
                train_lm.no_sync()
                if world > 1 and micro < cfg.grad_accum - 1
                else contextlib.nullcontext()
            )
            with sync_ctx, autocast():
                loss = train_lm(window)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
            micro_count += 1
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        window_tokens += tokens_per_step // world
        info_loss = info_val = None
        if step % cfg.log_every == 0 or step == max_steps:
            info_loss = log_row()
        if step % cfg.eval_every == 0 and step < max_steps:
            t_pause = time.perf_counter()
            val_loss = info_val = _evaluate(
                lm, val_windows, batch=cfg.batch_size, device=device, autocast=autocast
            )
            rows.append({"step": step, "tokens": tokens_seen, "val_loss": f"{val_loss:.5f}"})
            paused += time.perf_counter() - t_pause
            total_paused += time.perf_counter() - t_pause
        if is_main and (info_loss is not None or info_val is not None):
            write_metrics(out / "metrics.csv", rows)
        if step % cfg.checkpoint_every == 0 and step < max_steps:
            t_pause = time.perf_counter()
            save()
            last_saved = step
            paused += time.perf_counter() - t_pause
            total_paused += time.perf_counter() - t_pause
        if on_step is not None:
            on_step(
                StepInfo(
                    step, max_steps, info_loss, info_val, tok_s or None, scheduler.get_last_lr()[0]
                )
            )

    if micro_count:  # steps since the last log (a time-limited stop)
        log_row()
    run_tokens = (step - (resumed_from or 0)) * tokens_per_step // world
    loop_s = time.perf_counter() - t_start - total_paused
    run_tok_s = run_tokens / loop_s if run_tokens else 0.0  # this invocation's average
    run_mfu = fpt * run_tok_s / peak if peak and run_tokens else None
    val_loss = _evaluate(lm, val_windows, batch=cfg.batch_size, device=device, autocast=autocast)
    elapsed = elapsed_before + time.perf_counter() - t_start
    if step != last_saved or latest is None:
        save()  # a time-limited run can be continued by running the same command again
    n_val_tokens = data["validation"].n_tokens
    bpb = bits_per_byte(val_loss, n_tokens=n_val_tokens, n_bytes=data["validation"].n_bytes)
    if is_main:
        rows.append(
            {
                "step": step,
                "tokens": tokens_seen,
                "val_loss": f"{val_loss:.5f}",
                "elapsed_s": f"{elapsed:.1f}",
            }
        )
        write_metrics(out / "metrics.csv", rows)
        plot_curves(rows, out / "curves.png")
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        cfgm = model.config
        write_card(
            out,
            {
                "preset": preset.name,
                "architecture": cfgm.model_type,
                "layers": preset.layers,
                "hidden": preset.hidden,
                "heads": preset.heads,
                "context_length": cfgm.max_position_embeddings,
                "seq_len": cfg.seq_len,
                "tokenizer_vocab_size": len(tokenizer),
                "tokenizer_source": cfg.tokenizer or "byte-level BPE trained on the train split",
                "tokenizer_hash": tok_hash,
                "params": n_params,
                "params_non_embedding": n_non_embed,
                "steps": step,
                "max_steps": max_steps,
                "tokens_seen": tokens_seen,
                "batch_size": cfg.batch_size,
                "grad_accum": cfg.grad_accum,
                "world_size": world,
                "final_train_loss": last_loss,
                "final_val_loss": val_loss,
                "bits_per_byte": bpb,
                "tokens_per_s": run_tok_s,
                "mfu": run_mfu,
                "elapsed_s": elapsed,
                "stopped": stopped,
                "resumed_from": resumed_from,
                "device": str(device),
                "data": str(cfg.data),
                "format": cfg.format,
                "train_stories": data["train"].n_docs,
                "validation_stories": data["validation"].n_docs,
                "train_tokens": data["train"].n_tokens,
                "validation_tokens": n_val_tokens,
                "config": cfg.to_dict(),
            },
        )
        log.info(
            "train done steps=%d tokens=%d val_loss=%.4f bpb=%.4f stopped=%s",
            step,
            tokens_seen,
            val_loss,
            bpb,
            stopped,
        )
    if world > 1:
        torch.distributed.destroy_process_group()
    return TrainResult(
        out,
        step,
        tokens_seen,
        last_loss,
        val_loss,
        bpb,
        run_tok_s,
        run_mfu,
        elapsed,
        stopped,
        resumed_from,
        n_params,
        n_non_embed,
    )
