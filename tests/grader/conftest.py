"""Tiny real artefacts for grader tests: a BPE tokenizer, a random GPT-Neo, an export dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STORIES = [
    "Once upon a time, there was a little girl named Lily. She loved to play with her red "
    "ball. One day, the ball rolled into the park. Lily ran after it and found a big dog. "
    "The dog was kind.",
    "Tom had a small boat. He liked to float it in the pond. One day the wind was strong "
    "and the boat went far away. Tom was sad. His dad helped him get the boat back. Tom "
    "was happy again.",
    "Sara and Ben were playing in the park. They liked to climb the big oak tree. The sky "
    "was gloomy and the wind was cold. Sara wanted to go home and have hot cocoa. Ben said"
    " yes.",
    "There was a cat named Tim. Tim liked to sleep in the sun. One day a bird sat on the "
    "fence. Tim wanted to play with the bird, but the bird flew away. Tim went back to "
    "sleep.",
    "Anna found a shiny stone in the garden. She showed it to her mom. Her mom said it was"
    " very pretty. Anna put the stone in her box of treasures. She looked at it every day.",
    "A little bear was hungry. He wanted to eat honey. He asked the bee for some honey. "
    "The bee said yes and gave him a little. The bear said thank you and they became "
    "friends.",
    "Max had a new toy car. It was fast and blue. He raced it on the floor all day. His "
    "sister wanted to play too. Max shared his car and they had fun together.",
    "One day, a girl named Mia went to the beach. She built a big sand castle. A wave came"
    " and broke the castle. Mia did not cry. She built a new one with her friend.",
    "The sun was hot and the flowers were thirsty. Jack took a can and gave them water. "
    "The flowers grew tall and pretty. Jack was proud of his garden.",
    "Lucy had a kite. She went to the hill to fly it. The kite went up high in the sky. "
    "Lucy laughed and ran. Her friends came to watch the kite fly.",
    "Ben was sad because it was raining. He could not go outside to play. His mom gave him"
    " paper and crayons. Ben drew a big sun. Soon the rain stopped and the real sun came "
    "out.",
    "A small duck lived by the lake. He could not swim well. Every day he tried again. One"
    " day he swam across the lake. All the other ducks clapped for him.",
]


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def make_model_dir(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    context: int = 256,
    checkpoints: tuple[int, ...] = (),
) -> Path:
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    tok = _train_tokenizer(STORIES)
    torch.manual_seed(seed)
    cfg = GPTNeoConfig(
        vocab_size=len(tok),
        max_position_embeddings=context,
        hidden_size=hidden,
        num_layers=layers,
        attention_types=[[["global", "local"], layers // 2]],
        num_heads=4,
        window_size=64,
        intermediate_size=hidden * 2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPTNeoForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "training.json").write_text(
        json.dumps(
            {
                "preset": f"test-{hidden}x{layers}",
                "steps": 0,
                "final_val_loss": 5.9,
                "context_length": context,
                "tokenizer_vocab_size": len(tok),
            }
        )
    )
    for step in checkpoints:
        ck = path / "checkpoints" / f"step-{step}"
        model.save_pretrained(ck)
    return path


def make_export_dir(path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    def rows(stories: list[str], offset: int) -> dict:
        instr = []
        for s in stories:
            words = [w.strip(".,").lower() for w in s.split()[4:7]]
            instr.append(f"Words: {', '.join(words)}\nFeatures: Dialogue\nSummary: A short story.")
        return {
            "id": [f"s{offset + i}" for i in range(len(stories))],
            "text": stories,
            "instruction": instr,
            "instruct_text": [f"{h}\nStory: \n\n{s}" for h, s in zip(instr, stories, strict=True)],
            "summary": ["A short story."] * len(stories),
            "features": [["Dialogue"]] * len(stories),
        }

    DatasetDict(
        {
            "train": Dataset.from_dict(rows(STORIES[:9], 0)),
            "validation": Dataset.from_dict(rows(STORIES[9:], 9)),
        }
    ).save_to_disk(str(path))
    (path / "export.json").write_text(json.dumps({"format_version": 1, "fingerprint": "test"}))
    return path


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny-64x2", checkpoints=(1, 2))


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return make_export_dir(tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="session")
def loaded(model_dir):
    from grader.models import load_model

    return load_model(model_dir)
