"""The training loop: AdamW, warmup + cosine, accumulation, clipping, bf16, DDP, exact resume."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import checkpoint as ckpt
from trainer.config import OptionError, TrainConfig, TrainerError, check_options, residual_stream
from trainer.data import Prefetcher, WindowSampler
from trainer.device import peak_flops, prepare_cuda, resolve_device, start_process_group
from trainer.evaluate import Validation, evaluate_stream
from trainer.model import LossModel, build_model, flops_per_token
from trainer.optim import lr_factor, make_optimizer, warmup_for
from trainer.output import (
    StepInfo,
    TrainResult,
    plot_curves,
    read_metrics,
    run_info,
    write_card,
    write_metrics,
)
from trainer.prepare import prepare_data, rejected_note
from trainer.presets import get_preset, param_counts
from trainer.step import Stepper
from trainer.stopping import Interrupted, RunClock, StopSignal
from trainer.tokenizer import MIN_VOCAB, save_tokenizer

log = logging.getLogger(__name__)
__all__ = ["StepInfo", "TrainResult", "lr_factor", "train"]  # what callers import from here


def _check(cfg: TrainConfig) -> None:
    check_options(cfg)
    preset = get_preset(cfg.preset)
    if cfg.seq_len > preset.context:
        raise OptionError(
            f"seq_len {cfg.seq_len} is longer than the model's {preset.context} positions "
            f"(preset {preset.name})"
        )
    if cfg.residual_dtype == "bf16" and not (preset.arch == "gpt_neo" and cfg.fast_attention):
        raise OptionError("residual_dtype bf16 needs a GPT-Neo preset with fast_attention on")
    if cfg.tokenizer is None and cfg.vocab_size < MIN_VOCAB:
        raise OptionError(
            f"vocab_size {cfg.vocab_size} is too small; byte-level BPE needs >= {MIN_VOCAB}"
        )
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise OptionError(f"out {cfg.out} is a file, not a model directory")


def train(cfg: TrainConfig, *, on_step: Callable[[StepInfo], None] | None = None) -> TrainResult:
    """Train `cfg.preset` on the export at `cfg.data`; write the model directory `cfg.out`."""
    _check(cfg)
    preset = get_preset(cfg.preset)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    if cfg.local_attention in ("flex", "flash") and device.type != "cuda":
        raise TrainerError(f"local_attention {cfg.local_attention} trains on CUDA only")
    if cfg.residual_dtype == "bf16" and not (cfg.bf16 and device.type == "cuda"):
        raise OptionError("residual_dtype bf16 needs a bf16 run (CUDA, bf16 on)")
    is_main = rank == 0
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, no permission, ...
        raise TrainerError(f"cannot create out directory {out}: {exc.strerror or exc}") from None

    data = prepare_data(cfg)  # before the process group: no rank waits at a barrier for it
    tokenizer = data.tokenizer
    if world > 1:
        start_process_group(device, rank, world)
    prepare_cuda(device)

    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
    max_steps = math.ceil(cfg.tokens / tokens_per_step) if cfg.tokens is not None else cfg.max_steps
    model = build_model(
        preset,
        vocab_size=len(tokenizer),
        eos_id=tokenizer.eos_token_id,
        seed=cfg.seed,
        context=cfg.seq_len,
    )
    n_params, n_non_embed = param_counts(model)
    model.to(device)
    lm = LossModel(model, fast_attention=cfg.fast_attention)
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    lm.pick_local(
        cfg.local_attention, seq=cfg.seq_len, device=device, compiled=use_compile, bf16=cfg.bf16
    )
    residual = residual_stream(cfg, arch=preset.arch, cuda=device.type == "cuda")
    lm.residual_bf16 = residual == "bf16"  # an explicit bf16 is checked by _check and above
    optimizer = make_optimizer(lm, cfg)
    # A time limit moves the horizon to the steps that fit; the warmup stays as planned.
    plan = {"horizon": max_steps, "warmup": warmup_for(cfg, max_steps)}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, plan["horizon"], warmup=plan["warmup"])
    )
    sampler = WindowSampler(
        data.train.tokens,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        seed=cfg.seed + 1000 * rank,
    )
    # The shared definition's stream starts with <eos>: the first story's first token counts.
    eos = tokenizer.eos_token_id
    val_stream = np.concatenate([np.array([eos], dtype=np.int64), data.validation.tokens])

    # What a checkpoint must agree on besides the config keys: the data and the tokenizer.
    identity = {
        "tokenizer_hash": data.tokenizer_hash,
        "train_fingerprint": data.train_fingerprint,
        "world": world,
    }
    step, tokens_seen, elapsed_before, resumed_from = 0, 0, 0.0, None
    rows: list[dict[str, Any]] = []
    latest = ckpt.latest_checkpoint(out) if cfg.resume else None
    if not cfg.resume and is_main and (removed := ckpt.clear_checkpoints(out)):
        log.warning("no-resume: removed %d checkpoints of an earlier run from %s", removed, out)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, config=cfg, fingerprint=identity, max_steps=max_steps)
        ckpt.load_weights(model, latest)
        # A time-limited run goes on aiming where it was (the scheduler's next rate comes from
        # it); without a limit, or past a finished plan, it aims at max_steps as a new run does.
        if cfg.time_limit_s is not None and state.get("horizon", 0) > state["step"]:
            plan["horizon"] = min(state["horizon"], max_steps)
        plan["warmup"] = state.get("warmup", plan["warmup"])
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
    use_bf16 = cfg.bf16 and device.type == "cuda"
    stepper = Stepper(
        lm,
        train_lm,
        device=device,
        world=world,
        grad_accum=cfg.grad_accum,
        compile=use_compile,
        bf16=use_bf16,
        compile_mode=cfg.compile_mode,
        zero_grad=lambda: optimizer.zero_grad(set_to_none=True),
    )

    def evaluate(max_tokens: int | None) -> Validation:
        def run(forward: Callable) -> Validation:
            return evaluate_stream(
                forward,
                val_stream,
                context=cfg.seq_len,
                n_bytes=data.validation.n_bytes,
                batch_size=cfg.batch_size,
                device=device,
                max_windows=max(1, max_tokens // cfg.seq_len) if max_tokens else None,
                seed=cfg.seed,
                rank=rank,
                world=world,
                pad_id=eos,
            )

        return stepper.evaluate(run)

    loader: WindowSampler | Prefetcher = sampler
    if device.type == "cuda" and cfg.prefetch > 0:
        loader = Prefetcher(sampler, depth=cfg.prefetch)
    peak = cfg.peak_flops or peak_flops(device, bf16=use_bf16)
    fpt = flops_per_token(model, non_embedding_params=n_non_embed, seq_len=cfg.seq_len)
    window_tokens, last_loss, mfu, tok_s = 0, None, None, 0.0
    steady: list[tuple[int, float]] = []  # (tokens, seconds) of each logging window
    val_loss: float | None = None
    clock = RunClock(
        time_limit_s=cfg.time_limit_s,
        max_steps=max_steps,
        horizon=plan["horizon"],
        elapsed_before=elapsed_before,
        start_step=step,
        world=world,
        device=device,
    )
    t_start = t_log = clock.t_start
    paused = total_paused = 0.0  # seconds spent in evaluation and checkpoints
    last_saved = step

    def save() -> Path:
        extra = {
            "tokens_seen": tokens_seen,
            "elapsed_s": clock.elapsed(),
            "horizon": plan["horizon"],
            "warmup": plan["warmup"],
            "max_steps": max_steps,
            **identity,
        }
        path = ckpt.save_checkpoint(
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
        return path

    def log_row() -> float:
        """Read the mean loss since the last log: the loop's only host sync."""
        nonlocal window_tokens, t_log, paused, tok_s, mfu, last_loss
        last_loss = stepper.take_loss()
        now = time.perf_counter()
        seconds = max(now - t_log - paused, 1e-9)  # evals and saves excluded
        tok_s = window_tokens / seconds
        steady.append((window_tokens, seconds))
        mfu = fpt * tok_s / peak if peak else None
        window_tokens, t_log, paused = 0, now, 0.0
        lr = scheduler.get_last_lr()[0]
        rows.append(
            {
                "step": step,
                "tokens": tokens_seen,
                "train_loss": f"{last_loss:.5f}",
                "lr": f"{lr:.3e}",
                "tokens_per_s": f"{tok_s:.0f}",
                "mfu": f"{mfu:.4f}" if mfu else "",
                "elapsed_s": f"{clock.elapsed():.1f}",
            }
        )
        mfu_text = f"{mfu:.3f}" if mfu else "-"
        log.info(
            "train step=%d loss=%.4f lr=%.2e tokens_per_s=%.0f mfu=%s",
            *(step, last_loss, lr, tok_s, mfu_text),
        )
        return last_loss

    lm.train()
    stop: str | None = None
    whole_step = True  # False while a step is half done: no checkpoint can be taken then
    try:
        with StopSignal() as ctrl_c:
            while step < plan["horizon"]:
                logging_step = step % cfg.log_every == 0
                stop = clock.check(step, logging_step=logging_step, interrupted=ctrl_c.requested)
                plan["horizon"] = clock.horizon
                if stop:
                    break
                whole_step = False
                stepper.step([loader.next() for _ in range(cfg.grad_accum)])
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += tokens_per_step
                window_tokens += tokens_per_step // world
                whole_step = True
                info_loss = info_val = None
                if step % cfg.log_every == 0 or step == plan["horizon"]:
                    info_loss = log_row()
                if step % cfg.eval_every == 0 and step < plan["horizon"]:
                    t_pause = time.perf_counter()
                    val_loss = info_val = evaluate(cfg.eval_tokens).loss
                    rows.append(
                        {"step": step, "tokens": tokens_seen, "val_loss": f"{val_loss:.5f}"}
                    )
                    paused += time.perf_counter() - t_pause
                    total_paused += time.perf_counter() - t_pause
                if is_main and (info_loss is not None or info_val is not None):
                    write_metrics(out / "metrics.csv", rows)
                if step % cfg.checkpoint_every == 0 and step < plan["horizon"]:
                    t_pause = time.perf_counter()
                    save()
                    last_saved = step
                    paused += time.perf_counter() - t_pause
                    total_paused += time.perf_counter() - t_pause
                if on_step is not None:
                    lr = scheduler.get_last_lr()[0]
                    on_step(StepInfo(step, plan["horizon"], info_loss, info_val, tok_s or None, lr))
    except KeyboardInterrupt as exc:
        # Raised by a caller's hook at a step boundary (a real Ctrl-C sets the flag instead):
        # save that step, so "run the same command again" resumes it. A second Ctrl-C, a
        # half-done step or a multi-rank run (ranks would wait for each other) saves nothing.
        if isinstance(exc, Interrupted) or not whole_step or world > 1 or ctrl_c.requested:
            raise
        raise Interrupted(step, save() if step != last_saved else None) from None
    finally:
        if isinstance(loader, Prefetcher):
            loader.close()
    if stop == "interrupt":
        raise Interrupted(step, save() if step != last_saved else None)

    if stepper.micro_count:  # steps since the last log (a time-limited stop)
        log_row()
    stopped = "time_limit" if step < max_steps else "max_steps"
    run_tokens = (step - (resumed_from or 0)) * tokens_per_step // world
    loop_s = time.perf_counter() - t_start - total_paused
    run_tok_s = run_tokens / loop_s if run_tokens else 0.0  # this invocation's average
    run_mfu = fpt * run_tok_s / peak if peak and run_tokens else None
    later = steady[1:] or steady
    steady_tok_s = sum(t for t, _ in later) / sum(s for _, s in later) if later else None
    steady_mfu = fpt * steady_tok_s / peak if peak and steady_tok_s else None
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    final = evaluate(cfg.final_eval_tokens)
    elapsed = clock.elapsed()
    if step != last_saved or latest is None:
        save()  # a run can be continued by running it again with more steps or time
    result = TrainResult(
        out,
        step,
        tokens_seen,
        last_loss,
        final.loss,
        final.bits_per_byte,
        run_tok_s,
        run_mfu,
        elapsed,
        stopped,
        resumed_from,
        n_params,
        n_non_embed,
        steady_tok_s,
        steady_mfu,
        peak_mem,
        data.vocab_note,
        rejected_note(data.rejected, included=data.rejected_included)
        if data.rejected and any(data.rejected.values())
        else None,
    )
    if is_main:
        rows.append(
            {
                "step": step,
                "tokens": tokens_seen,
                "val_loss": f"{final.loss:.5f}",
                "elapsed_s": f"{elapsed:.1f}",
            }
        )
        write_metrics(out / "metrics.csv", rows)
        plot_curves(rows, out / "curves.png")
        model.save_pretrained(out)
        tokenizer.model_max_length = cfg.seq_len  # pipelines truncate to what was trained
        save_tokenizer(tokenizer, out)
        info = run_info(
            cfg,
            preset=preset,
            model=model,
            data=data,
            result=result,
            final=final,
            max_steps=max_steps,
            horizon=plan["horizon"],
            warmup=plan["warmup"],
            final_lr=scheduler.get_last_lr()[0],
            world=world,
            peak=peak,
            compiled=stepper.compiled,
            attention=lm.attention_backend,
            bf16=use_bf16,
            residual_dtype=residual,
            device=device,
        )
        write_card(out, info)
        log.info(
            "train done steps=%d tokens=%d val_loss=%.4f bpb=%.4f stopped=%s",
            step,
            tokens_seen,
            final.loss,
            final.bits_per_byte,
            stopped,
        )
    if world > 1:
        torch.distributed.destroy_process_group()
    return result
