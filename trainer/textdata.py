"""Release-format text exports: the layouts, the reader, and the lists of rejected stories.

A directory of text files with stories separated by `<|endoftext|>` as in the TinyStories
release (needs no `datasets`: GPU hosts, benchmarks): one of the layouts in TEXT_LAYOUTS, such as
the `tinystories/` folder of an export or a downloaded release. The release files cannot mark a
story that failed the checks without breaking the tools that read them, so an export made with
--include-rejected lists those stories beside each file, in `TinyStories-train.rejected.json`:
``{"format": "tinystories-rejected", "version": 1, "stories": N, "sha256": "<of the text file>",
"rejected": [0-based story indices]}``. The service writes it (service/dataset/export_shards.py);
the trainer may not import the service, so the format is read here on its own terms.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from trainer.config import TrainerError

SEPARATOR = "<|endoftext|>"
# Text-file layouts, (train, validation) names per format: ours, the TinyStories release's (which
# an export also writes under DIR/tinystories/) and the release's GPT-4-only V2.
TEXT_LAYOUTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "plain": (
        ("train.txt", ("validation.txt", "valid.txt")),
        ("TinyStories-train.txt", ("TinyStories-valid.txt",)),
        ("TinyStoriesV2-GPT4-train.txt", ("TinyStoriesV2-GPT4-valid.txt",)),
    ),
    "instruct": (("TinyStoriesInstruct-train.txt", ("TinyStoriesInstruct-valid.txt",)),),
}
REJECTED_SUFFIX = ".rejected.json"
REJECTED_FORMAT = "tinystories-rejected"
REJECTED_VERSION = 1


def layout_names(fmt: str) -> str:
    """The text layouts of `fmt`, for messages: `train.txt + validation.txt or valid.txt, ...`."""
    return ", ".join(f"{train} + {' or '.join(valid)}" for train, valid in TEXT_LAYOUTS[fmt])


TEXT_HELP = f"{layout_names('plain')}; for --format instruct {layout_names('instruct')}"


def rejected_sidecar(text_file: Path) -> Path:
    """Where the rejected stories of `text_file` are listed (TinyStories-train.rejected.json)."""
    return text_file.with_name(text_file.stem + REJECTED_SUFFIX)


class TextSplit:
    """A split read from a release-format text file: the part of `Dataset` the trainer uses.

    Read whole: simple, and only for tokenization (the release's 1.9 GB train file takes a few
    GB of memory once; the token file is what training maps afterwards).
    """

    def __init__(self, path: Path) -> None:
        raw = path.read_bytes()
        self.path = path
        self.texts = [t.strip() for t in raw.decode("utf-8").split(SEPARATOR) if t.strip()]
        self.column_names = ["text"]
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self._fingerprint = self.sha256[:16]
        # Indices of the stories that failed the checks, from the file's sidecar (None: none).
        self.rejected: list[int] | None = None

    @property
    def num_rows(self) -> int:
        return len(self.texts)

    def accepted_only(self) -> TextSplit:
        """The split without its rejected stories (itself when none are listed)."""
        if not self.rejected:
            return self
        kept = copy.copy(self)
        drop = set(self.rejected)
        kept.texts = [t for i, t in enumerate(self.texts) if i not in drop]
        # Other stories than the file's: a token cache entry of their own, per list of rejected.
        listed = ",".join(map(str, self.rejected))
        kept._fingerprint = hashlib.sha256(f"{self.sha256}-{listed}".encode()).hexdigest()[:16]
        return kept


def text_layouts(p: Path, fmt: str) -> list[dict[str, Path]]:
    """The complete (train and validation) text layouts of `fmt` found in `p` (the grader
    reads text exports through it too)."""
    found = []
    for train, valids in TEXT_LAYOUTS[fmt]:
        valid = next((p / v for v in valids if (p / v).is_file()), None)
        if (p / train).is_file() and valid is not None:
            found.append({"train": p / train, "validation": valid})
    return found


def check_sidecars(files: Mapping[str, Path]) -> None:
    """Refuse a layout where one text file lists its rejected stories and another does not:
    the run would leave them out of one split and train or grade on them in the other."""
    listed = {s: rejected_sidecar(f).exists() for s, f in files.items()}
    if any(listed.values()) and not all(listed.values()):
        has = next(f for s, f in files.items() if listed[s])
        lacks = next(f for s, f in files.items() if not listed[s])
        raise TrainerError(
            f"{rejected_sidecar(has)} lists the rejected stories of {has.name}, but "
            f"{rejected_sidecar(lacks).name} is missing beside {lacks.name}; an export writes "
            "one for each text file: restore it or re-export the dataset"
        )


def read_text_split(path: Path) -> TextSplit:
    """A text split with its rejected stories, or one line naming the file that is wrong:
    the first byte that is not UTF-8, or a damaged list of rejected stories."""
    try:
        split = TextSplit(path)
    except UnicodeDecodeError as exc:
        story = bytes(exc.object[: exc.start]).count(SEPARATOR.encode()) + 1
        raise TrainerError(
            f"{path} is not UTF-8 text: byte {exc.start} (0x{exc.object[exc.start]:02x}, "
            f"in story {story}); fix or re-export the file"
        ) from None
    except OSError as exc:
        raise TrainerError(f"cannot read {path}: {exc.strerror or exc}") from None
    split.rejected = read_rejected(split)
    return split


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_rejected(split: TextSplit) -> list[int] | None:
    """The sorted indices listed in the split's sidecar; None when it has none. A list that
    does not fit the file is an error, never skipped: its stories would be trained on."""
    sidecar = rejected_sidecar(split.path)
    if not sidecar.exists():
        return None

    def wrong(why: str) -> TrainerError:
        return TrainerError(f"{sidecar} is damaged ({why}); re-export the dataset")

    try:
        listing = json.loads(sidecar.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainerError(f"cannot read {sidecar}: {exc.strerror or exc}") from None
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise wrong(f"not JSON: {exc}") from None
    if not isinstance(listing, dict) or listing.get("format") != REJECTED_FORMAT:
        raise wrong(f"not a {REJECTED_FORMAT} list")
    if listing.get("version") != REJECTED_VERSION:
        raise TrainerError(
            f"{sidecar} has version {listing.get('version')!r}, not {REJECTED_VERSION}: "
            "update the trainer or re-export the dataset"
        )
    stories, rejected = listing.get("stories"), listing.get("rejected")
    if not _is_count(stories) or not isinstance(rejected, list):
        raise wrong("needs 'stories', a count, and 'rejected', a list of story indices")
    if stories != split.num_rows:
        raise TrainerError(
            f"{sidecar} is for {stories} stories but {split.path.name} holds {split.num_rows}; "
            "re-export the dataset"
        )
    if listing.get("sha256") != split.sha256:
        raise TrainerError(
            f"{sidecar} is for another {split.path.name} (its sha256 differs: the text file "
            "changed after the export); re-export the dataset"
        )
    bad = next((i for i in rejected if not _is_count(i) or i >= stories), None)
    if bad is not None:
        raise wrong(f"story index {bad!r} is not one of the file's {stories} stories (0-based)")
    if len(set(rejected)) != len(rejected):
        raise wrong("a story is listed twice")
    return sorted(rejected)


def no_accepted(split: str, rejected: int) -> TrainerError:
    """The error for a split whose stories all failed the checks."""
    return TrainerError(
        f"export split {split!r} has no accepted stories ({rejected} rejected); "
        "--include-rejected trains on them"
    )


def drop_rejected_texts(
    splits: dict[str, TextSplit], *, include: bool
) -> tuple[dict[str, TextSplit], dict[str, int] | None]:
    """The text splits without their listed rejected stories, and how many each split had;
    (splits, None) when no file lists any. `include` keeps them (counted still)."""
    if all(ts.rejected is None for ts in splits.values()):
        return splits, None
    counts = {s: len(ts.rejected or ()) for s, ts in splits.items()}
    if include:
        return splits, counts
    kept = {s: ts.accepted_only() for s, ts in splits.items()}
    for s, ts in kept.items():
        if ts.num_rows == 0:
            raise no_accepted(s, counts[s])
    return kept, counts


def load_text_export(p: Path, fmt: str) -> dict[str, TextSplit]:
    """The train and validation splits of the one text layout of `fmt` in `p`."""
    layouts = text_layouts(p, fmt)
    if not layouts:
        other = next(f for f in TEXT_LAYOUTS if f != fmt)
        if text_layouts(p, other):
            raise TrainerError(f"{p}: its text files hold {other} stories; use --format {other}")
        raise TrainerError(
            f"{p} is not an export directory (no dataset_dict.json, "
            "nor train.txt and validation.txt)"
        )
    if len(layouts) > 1:
        names = " and ".join(f"{f['train'].name} + {f['validation'].name}" for f in layouts)
        raise TrainerError(f"{p} holds several text layouts ({names}); keep one")
    check_sidecars(layouts[0])
    text = {s: read_text_split(f) for s, f in layouts[0].items()}
    for split, ts in text.items():
        if ts.num_rows == 0:
            raise TrainerError(f"export {p}: split {split!r} is empty")
    return text
