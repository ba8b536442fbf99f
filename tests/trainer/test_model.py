import pytest
import torch
import torch.nn.functional as F

from trainer import xent
from trainer.attention import band_mask
from trainer.config import TrainerError
from trainer.device import PEAK_BF16, peak_flops, resolve_device
from trainer.model import LossModel, build_model, flops_per_token
from trainer.presets import get_preset, param_counts
from trainer.xent import IGNORE, linear_cross_entropy


def sharp_model(context: int = 512):
    model = build_model(get_preset("tiny"), vocab_size=200, eos_id=0, seed=3, context=context)
    with torch.no_grad():  # sharpen attention so the local window really changes the result
        for block in model.transformer.h:
            block.attn.attention.q_proj.weight.mul_(8)
            block.attn.attention.k_proj.weight.mul_(8)
    return model


@pytest.mark.parametrize("seq", [40, 300])  # 300 > the 256-token local window
def test_fast_training_forward_equals_transformers_loss(seq: int) -> None:
    model = sharp_model()
    window = torch.randint(0, 200, (2, seq + 1), generator=torch.Generator().manual_seed(0))
    lm = LossModel(model, fast_attention=True)
    # Per-position hidden states: a wrong local-window mask shows up at positions past 256.
    reference_hidden = model.transformer(input_ids=window).last_hidden_state
    torch.testing.assert_close(lm._neo_hidden(window), reference_hidden, rtol=1e-4, atol=1e-5)
    fast = lm.mean_loss(window)
    reference = model(input_ids=window, labels=window).loss
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    eager = LossModel(model, fast_attention=False).mean_loss(window)
    torch.testing.assert_close(eager, reference, rtol=1e-5, atol=1e-5)
    fast.backward()
    grad = model.transformer.h[1].attn.attention.q_proj.weight.grad.clone()
    assert grad.abs().sum() > 0
    model.zero_grad()
    reference.backward()
    torch.testing.assert_close(
        grad, model.transformer.h[1].attn.attention.q_proj.weight.grad, rtol=1e-3, atol=1e-6
    )


def test_flex_sliding_window_equals_eager_gpt_neo() -> None:
    # FlexAttention's block-sparse sliding window (the compiled CUDA path) against transformers'
    # eager GPT-Neo. CPU flex has no backward, so this checks the forward, position by position.
    model = sharp_model()
    lm = LossModel(model)
    lm.use_flex(300, torch.device("cpu"))
    assert lm.attention_backend == "sdpa+flex"
    window = torch.randint(0, 200, (2, 300), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), pytest.warns(UserWarning, match="without torch.compile"):
        hidden = lm._neo_hidden(window)
    reference = model.transformer(input_ids=window).last_hidden_state
    torch.testing.assert_close(hidden, reference, rtol=1e-4, atol=1e-5)
    mask = band_mask(6, 3, torch.device("cpu"))
    assert mask[5].tolist() == [False, False, False, True, True, True]


def test_chunked_cross_entropy_equals_plain_loss_and_gradients(monkeypatch) -> None:
    monkeypatch.setattr(xent, "CHUNK_ELEMENTS", 300 * 16)  # 16-row chunks: several per batch
    monkeypatch.setattr(
        xent, "_aligned", lambda w, d: torch.nn.functional.pad(w.to(d), (0, 0, 0, 20))
    )
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(70, 24, generator=gen, requires_grad=True)
    weight = torch.randn(300, 24, generator=gen, requires_grad=True)
    targets = torch.randint(0, 300, (70,), generator=gen)
    targets[-5:] = IGNORE  # padding rows score nothing
    total = linear_cross_entropy(hidden, weight, targets)
    (total * 0.5).backward()
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    plain = F.cross_entropy(h2 @ w2.t(), targets, ignore_index=IGNORE, reduction="sum")
    (plain * 0.5).backward()
    torch.testing.assert_close(total, plain)
    torch.testing.assert_close(hidden.grad, h2.grad)
    torch.testing.assert_close(weight.grad, w2.grad)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets), plain)


def test_flops_per_token_counts_matmuls() -> None:
    model = build_model(get_preset("tiny"), vocab_size=200, eos_id=0, seed=0)
    _, non_embed = param_counts(model)
    # 6 x (blocks + output matmul) + attention scores: 2 layers, d=32, T=64.
    expected = 6 * (non_embed + 200 * 32) + 12 * 2 * 32 * 64
    assert flops_per_token(model, non_embedding_params=non_embed, seq_len=64) == expected


def test_saved_context_is_the_trained_context() -> None:
    model = build_model(get_preset("tiny"), vocab_size=200, eos_id=0, seed=0, context=128)
    assert model.config.max_position_embeddings == 128
    assert model.transformer.wpe.weight.shape[0] == 128


def test_peak_table_is_exact(monkeypatch) -> None:
    # "L4" must not match an L40S, an H100 PCIe is not an SXM, an A10G is not an A10.
    names = [n for n, _ in PEAK_BF16]
    assert len(names) == len(set(names))
    cuda = torch.device("cuda", 0)
    for name, expected in [
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA L40S-48C", None),  # unknown: no MFU rather than a guess
    ]:
        cap = next((c for n, c in PEAK_BF16 if n == name), (8, 9))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d, n=name: n)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d, c=cap: c)
        assert peak_flops(cuda) == expected
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d: (9, 0))
    assert peak_flops(cuda, bf16=False) == 989e12 / 2  # TF32
    assert peak_flops(torch.device("cpu")) is None


def test_missing_devices_are_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainerError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(TrainerError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_device("auto") == torch.device("cpu")


def test_bf16_residual_stream_trains_what_the_fp32_one_trains() -> None:
    # CPU autocast stands in for CUDA's: the stream between blocks is bf16, the layer norms
    # still compute in fp32, and loss and gradients stay within bf16 rounding of the fp32
    # stream's.
    model = sharp_model()
    window = torch.randint(0, 200, (2, 301), generator=torch.Generator().manual_seed(2))
    seen: list[torch.dtype] = []
    hook = model.transformer.h[1].ln_1.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].dtype)
    )
    results = {}
    for bf16_stream in (False, True):
        lm = LossModel(model)
        lm.residual_bf16 = bf16_stream
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lm.mean_loss(window)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[bf16_stream] = (loss.detach(), grads)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    (loss32, grad32), (loss16, grad16) = results[False], results[True]
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0)
    assert float((grad16 - grad32).norm() / grad32.norm()) < 0.05
    # Without autocast (a CPU or fp32 run) the switch changes nothing.
    lm = LossModel(model)
    lm.residual_bf16 = True
    torch.testing.assert_close(lm.mean_loss(window), LossModel(model).mean_loss(window))
