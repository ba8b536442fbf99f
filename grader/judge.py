"""The LLM judge: fills a versioned rubric, calls the model, parses, caches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from grader.answers import AnswerLog
from grader.cache import JudgmentCache, judgment_key
from grader.parsing import ParsedScores, answer_template, parse_gpt_eval, parse_template
from grader.resources import Rubric

log = logging.getLogger(__name__)


class JudgeUnavailable(RuntimeError):
    """The judge cannot be reached or refuses us (connection, auth, unknown model)."""


class JudgeCallError(RuntimeError):
    """One judge call failed for good (after the transport's own retries); the item is recorded."""


@dataclass(frozen=True)
class JudgeReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class JudgeTransport(Protocol):
    model: str

    async def chat(self, messages: list[dict]) -> JudgeReply: ...


@dataclass
class Judgment:
    key: str
    scores: dict[str, float | None]
    age_group: str | None
    method: str  # strict | lenient | parse_failure | error
    attempts: int
    raw: str
    cached: bool = False
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_raw: str | None = None  # the unreadable first answer when a correction was asked

    @property
    def ok(self) -> bool:
        return self.method in ("strict", "lenient")

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "scores": self.scores,
            "age_group": self.age_group,
            "method": self.method,
            "attempts": self.attempts,
            "raw": self.raw,
            "first_raw": self.first_raw,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    parse_failures: int = 0
    errors: int = 0
    strict: int = 0
    lenient: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


def _fill(template: str, values: dict[str, str]) -> str:
    # str.format would choke on braces inside stories; plain replacement does not.
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


class Judge:
    """Grades (prompt, completion) pairs with a rubric; concurrency bounded, results cached."""

    def __init__(
        self,
        transport: JudgeTransport,
        rubric: Rubric,
        cache: JudgmentCache | None,
        *,
        concurrency: int = 32,
        rejudge_failures: bool = False,
        parser: Callable[[str], ParsedScores | None] | None = None,
        answers: AnswerLog | None = None,
    ) -> None:
        self.transport = transport
        self.answers = answers  # every judgment's raw answer goes here too
        self._parser = parser
        self.rejudge_failures = rejudge_failures
        self.rubric = rubric
        self.cache = cache
        self.stats = JudgeStats()
        self._sem = asyncio.Semaphore(concurrency)
        self._abort: JudgeUnavailable | None = None
        self._template = None
        if "Answer in the format:" in rubric.turns[-1]:
            self._template = answer_template(rubric.turns[-1])

    @property
    def model(self) -> str:
        return self.transport.model

    @property
    def simulator(self) -> bool:
        """Whether the built-in simulator answers: every number it yields is marked so."""
        return bool(getattr(self.transport, "simulator", False))

    def parse(self, text: str) -> ParsedScores | None:
        if self._parser is not None:
            return self._parser(text)
        if self._template is not None:
            return parse_template(text, self._template)
        return parse_gpt_eval(text)

    def key(self, prompt: str, completion: str, repeat: int = 0) -> str:
        # Repeat n > 0 is an independent second judgment (judge noise), cached on its own key.
        version = self.rubric.version + (f"#repeat{repeat}" if repeat else "")
        return judgment_key(self.model, version, prompt, completion)

    async def _call(self, messages: list[dict]) -> JudgeReply:
        if self._abort:
            raise self._abort
        reply = await self.transport.chat(messages)
        self.stats.calls += 1
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        return reply

    def _from_cache(self, key: str) -> Judgment | None:
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None or (hit["method"] == "parse_failure" and self.rejudge_failures):
            return None
        self.stats.cache_hits += 1
        if hit["method"] == "parse_failure":
            self.stats.parse_failures += 1
        return Judgment(
            key=key,
            scores=hit["scores"],
            age_group=hit.get("age_group"),
            method=hit["method"],
            attempts=hit.get("attempts", 1),
            raw=hit.get("raw", ""),
            cached=True,
            first_raw=hit.get("first_raw"),
        )

    def _correction(self) -> str:
        if self.rubric.correction:
            return self.rubric.correction
        return "I could not read your grades. Answer again in exactly the format asked for above."

    async def grade(
        self,
        prompt: str,
        completion: str,
        fields: dict[str, str],
        *,
        use_cache: bool = True,
        repeat: int = 0,
    ) -> Judgment:
        """Grade one completion (see `_grade`); the answer is kept in the answer log."""
        judgment = await self._grade(prompt, completion, fields, use_cache=use_cache, repeat=repeat)
        if self.answers is not None:
            self.answers.record(
                judgment,
                prompt=prompt,
                completion=completion,
                judge_model=self.model,
                rubric_version=self.rubric.version,
                repeat=repeat,
            )
        return judgment

    async def _grade(
        self,
        prompt: str,
        completion: str,
        fields: dict[str, str],
        *,
        use_cache: bool,
        repeat: int,
    ) -> Judgment:
        """Run the rubric's turns and parse the last answer.

        An unreadable answer gets one follow-up turn asking for the exact format (resending the
        same messages at temperature 0 would return the same answer). A final failure is cached
        with both raw answers, so a rerun does not pay for it again.
        """
        key = self.key(prompt, completion, repeat)
        if use_cache:
            hit = self._from_cache(key)
            if hit is not None:
                return hit
        async with self._sem:
            pt = ct = 0
            messages: list[dict] = []
            first_raw = None
            try:
                reply = None
                for turn in self.rubric.turns:
                    if reply is not None:
                        messages.append({"role": "assistant", "content": reply.text})
                    messages.append({"role": "user", "content": _fill(turn, fields)})
                    reply = await self._call(messages)
                    pt, ct = pt + reply.prompt_tokens, ct + reply.completion_tokens
                assert reply is not None
                parsed, attempts = self.parse(reply.text), 1
                if parsed is None:
                    self.stats.retries += 1
                    attempts, first_raw = 2, reply.text
                    messages += [
                        {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": self._correction()},
                    ]
                    reply = await self._call(messages)
                    pt, ct = pt + reply.prompt_tokens, ct + reply.completion_tokens
                    parsed = self.parse(reply.text)
            except JudgeUnavailable as exc:
                self._abort = exc
                raise
            except JudgeCallError as exc:
                # Transient by nature (content filter, 5xx after retries): not cached.
                self.stats.errors += 1
                log.warning("judge_error key=%s error=%s", key[:12], exc)
                return Judgment(key, {}, None, "error", 1, "", error=str(exc))
        if parsed is None:
            self.stats.parse_failures += 1
            log.warning(
                "judge_parse_failure key=%s answer=%r (whole answer in %s)",
                key[:12],
                reply.text[:80],
                self.answers.path if self.answers is not None else "the judgment cache",
            )
            judgment = Judgment(key, {}, None, "parse_failure", attempts, reply.text)
        else:
            setattr(self.stats, parsed.method, getattr(self.stats, parsed.method) + 1)
            judgment = Judgment(
                key, parsed.scores, parsed.age_group, parsed.method, attempts, reply.text
            )
        judgment.first_raw = first_raw
        judgment.prompt_tokens, judgment.completion_tokens = pt, ct
        if use_cache and self.cache is not None:
            self.cache.put(
                judgment.to_dict()
                | {"judge_model": self.model, "rubric_version": self.rubric.version}
            )
        return judgment

    async def grade_many(
        self,
        items: list[tuple[str, str, dict[str, str]]],
        *,
        use_cache: bool = True,
        repeat: int = 0,
        on_done: Callable[[], None] | None = None,
    ) -> list[Judgment]:
        """Grade items concurrently; an unreachable judge stops the batch (done ones are cached)."""

        async def one(item: tuple[str, str, dict[str, str]]) -> Judgment:
            try:
                return await self.grade(*item, use_cache=use_cache, repeat=repeat)
            finally:
                if on_done:
                    on_done()

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        for r in results:
            if isinstance(r, JudgeUnavailable):
                raise r
            if isinstance(r, BaseException):
                raise r
        return list(results)  # type: ignore[arg-type]


def gpt_eval_fields(beginning: str, completion: str) -> dict[str, str]:
    return {"beginning": beginning, "completion": completion}
