from grader.generation import GenerationSettings, generate, generate_sequential
from grader.gpteval import completions_for_prompts

PROMPTS = ["Once upon a time, there was", "Tom had a small boat. He liked to", "Lily"]


def test_batched_greedy_matches_one_at_a_time_generate(loaded):
    """Left padding + our KV-cache loop must give exactly what model.generate gives unpadded."""
    s = GenerationSettings(temperature=0.0, max_new_tokens=16)
    batched = generate(loaded, PROMPTS, s)
    sequential = generate_sequential(loaded, PROMPTS, s)
    assert [c.text for c in batched] == [c.text for c in sequential]
    assert all(c.n_tokens > 0 for c in batched)


def test_sampling_is_seeded_and_varies(loaded):
    s = GenerationSettings(temperature=1.0, max_new_tokens=12, seed=3)
    a = generate(loaded, [PROMPTS[0]] * 6, s)
    b = generate(loaded, [PROMPTS[0]] * 6, s)
    assert [c.text for c in a] == [c.text for c in b]
    assert len({c.text for c in a}) > 1
    assert [c.prompt for c in a] == [PROMPTS[0]] * 6


def test_beam_search_runs_batched(loaded):
    s = GenerationSettings(temperature=0.0, num_beams=5, max_new_tokens=8)
    assert s.mode == "beam"
    outs = generate(loaded, PROMPTS, s)
    alone = [generate(loaded, [p], s)[0] for p in PROMPTS]
    assert [c.text for c in outs] == [c.text for c in alone]
    assert all(c.n_tokens > 0 for c in outs)


def test_completions_never_run_past_the_context(loaded):
    s = GenerationSettings(temperature=1.0, max_new_tokens=1000)
    (out,) = generate(loaded, ["Once upon a time " * 80], s)
    assert 0 < out.n_tokens <= loaded.context_length // 2


def test_k_completions_per_prompt_and_one_for_deterministic(loaded):
    samples = completions_for_prompts(
        loaded, PROMPTS[:2], k=3, settings=GenerationSettings(max_new_tokens=4)
    )
    assert [s.prompt_index for s in samples] == [0, 0, 0, 1, 1, 1]
    greedy = completions_for_prompts(
        loaded, PROMPTS[:2], k=3, settings=GenerationSettings(temperature=0, max_new_tokens=4)
    )
    assert len(greedy) == 2


def test_model_dir_without_tokenizer_is_rejected(tmp_path, model_dir):
    import shutil

    import pytest

    from grader.models import ModelDirError, check_model_dir

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "config.json", bare / "config.json")
    with pytest.raises(ModelDirError, match="no tokenizer"):
        check_model_dir(bare)
    with pytest.raises(ModelDirError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
