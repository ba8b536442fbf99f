"""Resumable checkpoints: model, optimizer, scheduler, step, config and every RNG state."""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import RESUME_KEYS, TrainConfig, TrainerError
from trainer.tokenizer import save_tokenizer

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.pt"


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest complete `checkpoints/step-N` (a partly written one is never picked)."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return None
    steps = [
        (int(m[1]), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return max(steps)[1] if steps else None


def rng_state(sampler_state: dict[str, Any]) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampler": sampler_state,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> dict[str, Any]:
    """Restore process RNGs; returns the data sampler's state for the caller to load."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return state["sampler"]


def save_checkpoint(
    *,
    out: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    extra: dict[str, Any],
    rank_rng: dict[str, Any],
    rank: int = 0,
    is_main: bool = True,
) -> Path:
    """Write `checkpoints/step-N/`: a from_pretrained-loadable model plus the trainer state.

    The state file is written last, so a kill mid-save leaves no directory that looks complete.
    """
    root = checkpoint_root(out)
    path = root / f"step-{step}"
    path.mkdir(parents=True, exist_ok=True)
    torch.save(rank_rng, path / f"rng-rank{rank}.pt")
    if not is_main:
        return path
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    state = {
        "step": step,
        "config": config.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **extra,
    }
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path / STATE_FILE)
    _prune(root, keep=config.keep_checkpoints, current=step)
    log.info("checkpoint saved step=%d path=%s", step, path)
    return path


def _prune(root: Path, *, keep: int, current: int) -> None:
    dirs = sorted((int(m[1]), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for step, p in dirs[: max(0, len(dirs) - max(keep, 1))]:
        if step != current:
            shutil.rmtree(p, ignore_errors=True)


def clear_checkpoints(out: str | Path) -> int:
    """Delete every `checkpoints/step-N` under `out` (a --no-resume run starts over).

    Left in place, an earlier run's higher-numbered steps would outlive this run's in pruning,
    and a later plain rerun would resume them instead of this run.
    """
    root = checkpoint_root(out)
    if not root.is_dir():
        return 0
    old = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()]
    for p in old:
        shutil.rmtree(p)
    return len(old)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def load_checkpoint(
    path: Path, *, config: TrainConfig, fingerprint: dict[str, Any], max_steps: int
) -> dict:
    """The trainer state of `path`, after checking it can continue this run.

    `max_steps` is this run's plan (from --max-steps or --tokens). A checkpoint past it, or
    planned for another length under a cosine schedule (its rate curve would jump), is refused.
    """
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    saved = state["config"]
    # A key an older checkpoint lacks had its default then (e.g. include_rejected).
    diffs = [
        f"{k} {saved.get(k, _DEFAULTS[k])!r} != {getattr(config, k)!r}"
        for k in RESUME_KEYS
        if saved.get(k, _DEFAULTS[k]) != getattr(config, k)
    ]
    diffs += [f"{k} {state.get(k)!r} != {v!r}" for k, v in fingerprint.items() if state.get(k) != v]
    if diffs:
        raise TrainerError(
            f"checkpoint {path} is from another config ({'; '.join(diffs)}); "
            "use a new --out directory or --no-resume"
        )
    if state["step"] > max_steps:
        raise TrainerError(
            f"checkpoint {path} is at step {state['step']}, past this run's {max_steps} steps; "
            "use --no-resume to start over, a new --out directory, or more steps"
        )
    planned = state.get("max_steps")
    if planned is not None and planned != max_steps and config.schedule == "cosine":
        raise TrainerError(
            f"checkpoint {path} is from a run planned for {planned} steps, this one for "
            f"{max_steps}: the cosine schedule would jump; plan {planned} steps, use "
            "--no-resume to start over, or a new --out directory"
        )
    return state


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a checkpoint's safetensors weights into `model` (tied weights are stored once)."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise TrainerError(f"checkpoint {path} does not match the model: {missing or unexpected}")
    model.tie_weights()
