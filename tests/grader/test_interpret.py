from grader.interpret import attention_maps, neurons_markdown, top_activating_tokens
from grader.models import load_model


def test_attention_png_and_neuron_table(model_dir, tmp_path):
    lm = load_model(model_dir, eager_attention=True)
    info = attention_maps(lm, "Once upon a time there was a cat", tmp_path / "att.png")
    assert info["layers"] == 2 and info["heads"] == 4
    assert info["row_sum_max_error"] < 1e-4
    assert (tmp_path / "att.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = top_activating_tokens(
        lm, ["Once upon a time there was a cat.", "Tom had a boat."], neurons_per_layer=3, top_k=4
    )
    assert len(rows) == 6
    for r in rows:
        acts = [e["activation"] for e in r["examples"]]
        assert acts == sorted(acts, reverse=True) and acts[0] == r["peak"]
    md = neurons_markdown(rows)
    assert md.count("\n") == 7 and md.startswith("| layer | neuron |")


def test_attention_keeps_token_labels_past_24_tokens(model_dir, tmp_path):
    lm = load_model(model_dir, eager_attention=True)
    prompt = "Tom had a small boat. He liked to float it in the pond. One day the wind was strong."
    info = attention_maps(lm, prompt, tmp_path / "att.png")
    assert info["tokens"] > 24 and info["labelled_tokens"] == info["tokens"]


def test_views_stay_within_a_short_trained_context(tmp_path):
    from tests.grader.conftest import make_model_dir

    lm = load_model(make_model_dir(tmp_path / "short", context=32), eager_attention=True)
    long_text = "Tom had a small boat. He liked to float it in the pond. " * 8
    info = attention_maps(lm, long_text, tmp_path / "att.png")
    assert info["tokens"] == 32 and info["labelled_tokens"] == 32
    rows = top_activating_tokens(lm, [long_text], neurons_per_layer=1, top_k=2)
    assert len(rows) == 2
