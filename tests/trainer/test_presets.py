import pytest

from trainer.config import TrainerError
from trainer.presets import PRESETS, build_config, count_preset, get_preset


@pytest.mark.parametrize(
    ("name", "vocab", "context", "total", "non_embedding"),
    [
        # roneneldan/TinyStories-33M and -1M as released (GPT-Neo vocab 50257, 2048 positions).
        ("33M", 50257, 2048, 68_514_048, 28_343_808),
        ("1M", 50257, 2048, 3_745_984, 398_464),
        # EleutherAI/gpt-neo-125M: 12 layers x 768.
        ("12x768", 50257, 2048, 125_198_592, 85_028_352),
        # llama2.c stories15M: dim 288, 6 layers, vocab 32000, shared classifier.
        ("llama-15M", 32000, None, 15_191_712, 5_975_712),
    ],
)
def test_parameter_counts_match_known_models(name, vocab, context, total, non_embedding) -> None:
    assert count_preset(name, vocab_size=vocab, context=context) == (total, non_embedding)


def test_released_shapes() -> None:
    shapes = {n: (p.layers, p.hidden) for n, p in PRESETS.items() if p.arch == "gpt_neo"}
    assert shapes["1M"] == (8, 64) and shapes["3M"] == (8, 128) and shapes["8M"] == (8, 256)
    assert shapes["28M"] == (8, 512) and shapes["33M"] == (4, 768)
    assert shapes["1L-21M"] == (1, 1024) and shapes["2L-33M"] == (2, 1024)
    cfg = build_config(PRESETS["8M"], vocab_size=10_000)
    assert cfg.attention_layers == ["global", "local"] * 4
    assert (cfg.num_heads, cfg.window_size, cfg.max_position_embeddings) == (16, 256, 512)
    assert cfg.intermediate_size == 4 * 256
    one = build_config(PRESETS["1L-21M"], vocab_size=10_000)
    assert one.attention_layers == ["global"]


def test_custom_and_unknown_presets() -> None:
    p = get_preset("6x384")
    assert (p.layers, p.hidden, p.heads, p.arch) == (6, 384, 16, "gpt_neo")
    assert get_preset("llama:2x64").arch == "llama"
    assert count_preset("3x48", vocab_size=100)[1] > 0  # 48 % 16 == 0, 3 layers: odd count works
    with pytest.raises(TrainerError, match=r"unknown preset 'huge'.*1M, 3M, 8M, 28M, 33M"):
        get_preset("huge")


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.name_params])
def test_preset_names_match_their_size_at_the_vocabulary_they_assume(name: str) -> None:
    # The names are the paper's rounded sizes at its 10k vocabulary (llama-15M: llama2.c's 32k),
    # 512 positions and tied embeddings; 8M is the loosest at 9.0M.
    preset = PRESETS[name]
    total, _ = count_preset(name, vocab_size=preset.name_vocab)
    assert total == pytest.approx(preset.name_params, rel=0.15), (name, total)
    assert get_preset("6x384").name_params is None


@pytest.mark.parametrize("name", [*PRESETS, "3x48", "llama:2x64"])
@pytest.mark.parametrize("vocab", [4096, 10_000])
def test_the_instant_table_counts_what_transformers_builds(name: str, vocab: int) -> None:
    from trainer.presets import formula_counts

    assert formula_counts(name, vocab_size=vocab) == count_preset(name, vocab_size=vocab)
