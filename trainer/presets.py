"""Model presets: the released TinyStories GPT-Neo sizes, custom sizes and a Llama option."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trainer.config import OptionError, TrainerError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# The released TinyStories models: GPT-Neo with alternating global/local attention, a
# 256-token local window, 16 heads and a 4x MLP. Training context is 512 tokens (stories are
# short; the released configs carry 2048 positions but were trained on 512).
CONTEXT = 512
WINDOW = 256
HEADS = 16
# The paper kept GPT-Neo's 10k most frequent tokens: preset names count parameters (tied
# embeddings, 512 positions) at that vocabulary. A smaller tokenizer makes a smaller model.
NAME_VOCAB = 10_000


@dataclass(frozen=True)
class Preset:
    name: str
    layers: int
    hidden: int
    heads: int = HEADS
    arch: Literal["gpt_neo", "llama"] = "gpt_neo"
    context: int = CONTEXT
    window: int = WINDOW
    intermediate: int | None = None  # None -> 4 x hidden
    kv_heads: int | None = None  # llama only; None -> heads
    name_vocab: int = NAME_VOCAB  # the vocabulary at which the name's size holds

    @property
    def name_params(self) -> float | None:
        """The parameter count the name states ("33M" -> 33e6), or None for unsized names."""
        match = re.search(r"(\d+)M$", self.name)
        return float(match[1]) * 1e6 if match else None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("1M", 8, 64),
        Preset("3M", 8, 128),
        Preset("8M", 8, 256),
        Preset("28M", 8, 512),
        Preset("33M", 4, 768),
        Preset("1L-21M", 1, 1024),
        Preset("2L-33M", 2, 1024),
        # For tests and smoke runs: trains in seconds on one CPU core.
        Preset("tiny", 2, 32, heads=4),
        # llama2.c's stories15M shape (dim 288, 6 layers, 6 heads, SwiGLU 768, context 256).
        Preset(
            "llama-15M",
            6,
            288,
            heads=6,
            arch="llama",
            context=256,
            intermediate=768,
            name_vocab=32_000,  # llama2.c's Llama 2 tokenizer
        ),
    )
}

_CUSTOM = re.compile(r"^(?:(?P<arch>llama|neo):)?(?P<layers>\d+)x(?P<hidden>\d+)$")


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """A named preset, or a custom `LAYERSxHIDDEN` GPT-Neo (`llama:LxH` for Llama)."""
    if name in PRESETS:
        return PRESETS[name]
    match = _CUSTOM.match(name)
    if match:
        layers, hidden = int(match["layers"]), int(match["hidden"])
        arch = "llama" if match["arch"] == "llama" else "gpt_neo"
        heads = HEADS if hidden % HEADS == 0 else _largest_divisor(hidden, HEADS)
        if layers < 1 or hidden < 1:
            raise TrainerError(f"custom preset {name!r}: layers and hidden size must be >= 1")
        return Preset(name, layers, hidden, heads=heads, arch=arch)
    valid = ", ".join(PRESETS)
    raise OptionError(
        f"unknown preset {name!r}; valid presets: {valid}, or a custom size like 6x384"
    )


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if n % d == 0)


def build_config(
    preset: Preset, *, vocab_size: int, eos_id: int = 0, context: int | None = None
) -> PretrainedConfig:
    """The transformers config of a preset for a tokenizer of `vocab_size` tokens."""
    positions = context or preset.context
    intermediate = preset.intermediate or 4 * preset.hidden
    if preset.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=preset.hidden,
            intermediate_size=intermediate,
            num_hidden_layers=preset.layers,
            num_attention_heads=preset.heads,
            num_key_value_heads=preset.kv_heads or preset.heads,
            max_position_embeddings=positions,
            tie_word_embeddings=True,  # as llama2.c: the classifier shares the embedding
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    from transformers import GPTNeoConfig

    # Global then local, repeated; an odd layer count ends on a global layer.
    attention_types: list = [[["global", "local"], preset.layers // 2]]
    if preset.layers % 2:
        attention_types.append([["global"], 1])
    attention_types = [t for t in attention_types if t[1] > 0]
    return GPTNeoConfig(
        vocab_size=vocab_size,
        max_position_embeddings=positions,
        hidden_size=preset.hidden,
        num_layers=preset.layers,
        attention_types=attention_types,
        num_heads=preset.heads,
        intermediate_size=intermediate,
        window_size=preset.window,
        activation_function="gelu_new",
        # The released models train without dropout: one pass over millions of stories.
        embed_dropout=0.0,
        attention_dropout=0.0,
        resid_dropout=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
    )


def param_counts(model: PreTrainedModel) -> tuple[int, int]:
    """(all parameters, parameters without token and position embeddings); tied weights once."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings().weight.numel()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if wpe is not None:
        embeddings += wpe.weight.numel()
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        embeddings += output.weight.numel()
    return total, total - embeddings


def count_preset(name: str, *, vocab_size: int, context: int | None = None) -> tuple[int, int]:
    """Parameter counts of a preset without allocating its weights (meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = build_config(get_preset(name), vocab_size=vocab_size, context=context)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return param_counts(model)


def formula_counts(name: str, *, vocab_size: int, context: int | None = None) -> tuple[int, int]:
    """The same counts as `count_preset`, from the architecture's shapes: no torch or
    transformers import, so `train-presets` prints at once (a test checks both agree)."""
    p = get_preset(name)
    h, layers = p.hidden, p.layers
    inner = p.intermediate or 4 * h
    if p.arch == "llama":
        kv = (p.kv_heads or p.heads) * (h // p.heads)
        # q, o: h*h; k, v: h*kv; gate, up, down: h*inner each (no biases); two RMSNorms.
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * inner + 2 * h
        non_embed = layers * per_layer + h  # + the final norm
        return non_embed + vocab_size * h, non_embed  # tied classifier, rotary positions
    # q, k, v without bias; out_proj, c_fc, c_proj with bias; two LayerNorms (weight + bias).
    per_layer = 4 * h * h + h + 2 * h * inner + inner + h + 4 * h
    non_embed = layers * per_layer + 2 * h  # + ln_f
    positions = context or p.context
    return non_embed + vocab_size * h + positions * h, non_embed


def human(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"
