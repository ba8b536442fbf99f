"""Loading trainer model directories (transformers `save_pretrained` dirs) for evaluation."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


class ModelDirError(ValueError):
    """A model directory cannot be evaluated (missing files, unreadable config)."""


@dataclass
class LoadedModel:
    path: Path
    name: str
    model: Any
    tokenizer: Any
    training: dict = field(default_factory=dict)
    tokenizer_dir: Path | None = None
    _weights_sha: str | None = field(default=None, repr=False)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def context_length(self) -> int:
        return trained_context(self.model.config, self.training)[0]

    @property
    def context_source(self) -> str:
        return trained_context(self.model.config, self.training)[1]

    @property
    def weights_sha(self) -> str:
        """sha256 of the weight and tokenizer files: caches key completions by it."""
        if self._weights_sha is None:
            self._weights_sha = weights_hash(self.path, self.tokenizer_dir)
        return self._weights_sha

    @property
    def eos_id(self) -> int | None:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else getattr(self.model.config, "eos_token_id", None)

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "name": self.name,
            "path": str(self.path),
            "params": self.n_params,
            "hidden_size": getattr(cfg, "hidden_size", None),
            "layers": getattr(cfg, "num_layers", getattr(cfg, "num_hidden_layers", None)),
            "heads": getattr(cfg, "num_heads", getattr(cfg, "num_attention_heads", None)),
            "context_length": self.context_length,
            "context_source": self.context_source,
            "weights_sha256": self.weights_sha[:16],
            "tokenizer": tokenizer_description(self.tokenizer),
        }


# Keys older trainer outputs used in training.json for the sequence length they trained at.
_TRAINED_CONTEXT_KEYS = ("context_length", "seq_len", "block_size")


def trained_context(config: Any, training: dict) -> tuple[int, str]:
    """(context, where it came from): the window the model was trained at, never more.

    The trainer saves the trained context as `max_position_embeddings`; an older model dir may
    have a larger position table than it ever trained, with the real length in training.json.
    """
    n_pos = getattr(config, "max_position_embeddings", None)
    trained = next(
        (int(training[k]) for k in _TRAINED_CONTEXT_KEYS if isinstance(training.get(k), int)),
        None,
    )
    if trained is not None and (n_pos is None or trained < n_pos):
        return trained, f"training.json (position table {n_pos})"
    if n_pos is None:
        raise ModelDirError(
            "model config has no max_position_embeddings and training.json no context_length: "
            "the context the model was trained at is unknown"
        )
    return int(n_pos), "config.json max_position_embeddings"


def weights_hash(path: Path, tokenizer_dir: Path | None = None) -> str:
    """sha256 over the weight files and the tokenizer: equal hashes mean equal completions."""
    digest = hashlib.sha256()
    # Only the weights: a checkpoint's optimizer or RNG state must not make it look different.
    files = sorted(
        f for pattern in ("model*.safetensors", "pytorch_model*.bin") for f in path.glob(pattern)
    )
    tok = tokenizer_dir or path
    files += [tok / f for f in TOKENIZER_FILES if (tok / f).is_file()]
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def tokenizer_description(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__} vocab={len(tokenizer)} ({Path(name).name or 'local'})"


def check_model_dir(path: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Fail early with one clear message when a directory is not a loadable model."""
    p = Path(path)
    t = Path(tokenizer_dir) if tokenizer_dir else p
    if not p.is_dir():
        raise ModelDirError(f"model directory {p} does not exist")
    if not (p / "config.json").is_file():
        raise ModelDirError(f"model directory {p} has no config.json (not a save_pretrained dir)")
    if not any((t / f).is_file() for f in TOKENIZER_FILES):
        raise ModelDirError(f"model directory {p} has no tokenizer (expected tokenizer.json)")
    _check_context_is_recorded(p)
    return p


def _check_context_is_recorded(p: Path) -> None:
    """A config without a position count loads with the class default (2048 for GPT-Neo), which
    says nothing about what the model was trained at: refuse rather than evaluate past it."""
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"model directory {p}: config.json is unreadable ({exc})") from exc
    keys = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
    if any(isinstance(config.get(k), int) for k in keys):
        return
    if any(isinstance(read_training_info(p).get(k), int) for k in _TRAINED_CONTEXT_KEYS):
        return
    raise ModelDirError(
        f"model directory {p} records no training context (config.json has no "
        "max_position_embeddings, training.json no context_length)"
    )


def dir_name(path: str | Path) -> str:
    """The name a model dir is reported by when no other --model shares it."""
    # abspath, not resolve: `.` and `..` get a real name, a symlink keeps the name it was given.
    return Path(os.path.abspath(path)).name or "model"


def unique_names(paths: list[Path]) -> list[str]:
    """Report names for model dirs: each dir's name, made unique.

    The name becomes file names (completions/NAME.jsonl, attention_NAME.png): two models in
    d1/model and d2/model would overwrite each other's files. Dirs sharing a name in different
    parents are called parent-name (d1-model, d2-model); any still equal (the same dir twice)
    get -2, -3, ... in command-line order.
    """
    full = [Path(os.path.abspath(p)) for p in paths]
    base = [dir_name(p) for p in paths]
    parents: dict[str, set[str]] = {}
    for f, n in zip(full, base, strict=True):
        parents.setdefault(n, set()).add(f.parent.name)
    wanted = [
        f"{f.parent.name}-{n}" if len(parents[n]) > 1 and f.parent.name else n
        for f, n in zip(full, base, strict=True)
    ]
    names: list[str] = []
    for n in wanted:
        candidate, i = n, 1
        while candidate in names:
            i += 1
            candidate = f"{n}-{i}"
        names.append(candidate)
    return names


def read_training_info(path: Path) -> dict:
    info = path / "training.json"
    if not info.is_file():
        return {}
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("training_json_unreadable path=%s", info)
        return {}
    return data if isinstance(data, dict) else {}


def load_model(
    path: str | Path,
    *,
    eager_attention: bool = False,
    name: str | None = None,
    tokenizer_dir: str | Path | None = None,
) -> LoadedModel:
    """Load model + tokenizer in eval mode on CPU (or the first GPU when one is present)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = check_model_dir(path, tokenizer_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(Path(tokenizer_dir) if tokenizer_dir else p)
        kwargs: dict[str, Any] = {}
        if eager_attention:
            kwargs["attn_implementation"] = "eager"
        model = AutoModelForCausalLM.from_pretrained(p, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelDirError(
            f"model directory {p} cannot be loaded: {str(exc).splitlines()[0]}"
        ) from exc
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out; any id works, EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    training = read_training_info(p)
    trained_context(model.config, training)  # an unknown context fails here, in one line
    return LoadedModel(
        path=p,
        name=name or p.name,
        model=model,
        tokenizer=tokenizer,
        training=training,
        tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir else p,
    )


def list_checkpoints(path: str | Path) -> list[tuple[int, Path]]:
    """`checkpoints/step-N/` subdirectories that are loadable model dirs, in step order."""
    root = Path(path) / "checkpoints"
    found = []
    if root.is_dir():
        for sub in root.iterdir():
            m = re.fullmatch(r"step-(\d+)", sub.name)
            if m and sub.is_dir() and (sub / "config.json").is_file():
                found.append((int(m.group(1)), sub))
    return sorted(found)


def checkpoint_tokenizer_dir(model_dir: Path, checkpoint: Path) -> Path:
    """Checkpoints may omit tokenizer files; the parent model's tokenizer is the same one."""
    if any((checkpoint / f).is_file() for f in TOKENIZER_FILES):
        return checkpoint
    return model_dir
