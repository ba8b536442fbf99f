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
