import pytest
import torch

from trainer.model import LossModel, build_model, flops_per_token
from trainer.presets import get_preset, param_counts


@pytest.mark.parametrize("seq", [40, 300])  # 300 > the 256-token local window
def test_fast_training_forward_equals_transformers_loss(seq: int) -> None:
    model = build_model(get_preset("tiny"), vocab_size=200, eos_id=0, seed=3)
    with torch.no_grad():  # sharpen attention so the local window really changes the result
        for block in model.transformer.h:
            block.attn.attention.q_proj.weight.mul_(8)
            block.attn.attention.k_proj.weight.mul_(8)
    window = torch.randint(0, 200, (2, seq + 1), generator=torch.Generator().manual_seed(0))
    lm = LossModel(model, fast_attention=True)
    # Per-position logits: a wrong local-window mask shows up at positions past 256.
    torch.testing.assert_close(
        lm._neo_logits(window), model(input_ids=window).logits, rtol=1e-4, atol=1e-5
    )
    fast = lm(window)
    reference = model(input_ids=window, labels=window).loss
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    eager = LossModel(model, fast_attention=False)(window)
    torch.testing.assert_close(eager, reference, rtol=1e-5, atol=1e-5)
    fast.backward()
    assert model.transformer.h[1].attn.attention.q_proj.weight.grad.abs().sum() > 0


def test_flops_per_token_counts_matmuls() -> None:
    model = build_model(get_preset("tiny"), vocab_size=200, eos_id=0, seed=0)
    _, non_embed = param_counts(model)
    # 6 x (blocks + output matmul) + attention scores: 2 layers, d=32, T=64.
    expected = 6 * (non_embed + 200 * 32) + 12 * 2 * 32 * 64
    assert flops_per_token(model, non_embedding_params=non_embed, seq_len=64) == expected
