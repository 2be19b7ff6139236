"""Optional second extraction stage: an LLM judge maps a closed reply to an option where the rule says unparseable.

``--extractor llm=openai:MODEL[,base_url=URL][,key=value...]`` names the judge: a chat model on any
OpenAI-compatible server, reached through the ``openai`` adapter of the plugin registry (the core
never imports a plugin folder), with that adapter's options (``base_url``, ``api_key_env``,
``max_retries``, ``timeout``...). The judge is asked only about closed answers that extraction
rule v3 leaves ``unparseable``; every other answer is the rule's alone.

The prompt (version :data:`JUDGE_PROMPT_VERSION`) lists the options, gives the reply and asks for
one option letter or ``none`` -- never the question, so the judge reads the reply instead of
answering the question itself. Only a reply that is exactly one option letter, or ``none``,
counts; anything else (a sentence, two letters, a letter that is no option) is recorded as
``invalid`` and the sample stays unparseable. A request that fails is recorded as ``failed``
with its reason (the adapter strips any key from it) and is asked again by the next rerun;
a sample is never lost to the judge. Answers are cached in the response cache, keyed by the
judge's fingerprint, the prompt version, the prompt and the settings.

Each judged record keeps both outcomes: the rule's in ``extraction``, the judge's in ``judge``.
The judge is part of the metric definition (:meth:`JudgeSpec.definition`), so ``compare``
refuses to mix judged and unjudged runs and a run directory cannot be resumed with another judge.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from medmim_eval.adapter import (AdapterContext, GenerationRequest, GenerationResult, GenerationSettings, ModelSpec,
                                 contract_problem, parse_model_specs)
from medmim_eval.cache import ResponseCache
from medmim_eval.errors import ContractError, MedmimError
from medmim_eval.plugins import PluginHost
from medmim_eval.schema import UNPARSEABLE, JudgeRecord, Prompt, Sample, SampleRecord, TextPart, content_hash

JUDGE_ADAPTER = "openai"
JUDGE_PROMPT_VERSION = "1"
# Room for a letter or "none" and a stray token; a judge that starts explaining is cut off and invalid.
JUDGE_SETTINGS = GenerationSettings(max_new_tokens=8, temperature=0.0, seed=0)
REPLY_CHARS_KEPT = 200
NONE = "none"
PROMPT_TEMPLATE = (
    "Below are the options of a multiple-choice question and a reply to it. Say which option the reply "
    "chose. Do not answer the question yourself and do not judge whether the reply is right.\n\n"
    "Options:\n{options}\n\n"
    "Reply:\n<<<\n{reply}\n>>>\n\n"
    "If the reply clearly chooses exactly one option, write that option's letter. If it chooses no option, "
    "more than one, or you cannot tell, write none. Write only one of {choices}, nothing else."
)


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed ``--extractor llm=ADAPTER:MODEL[,key=value...]``."""

    spec: ModelSpec

    @property
    def name(self) -> str:
        """``openai:MODEL``: how records and footers name the judge."""
        return f"{self.spec.adapter}:{self.spec.target}"

    def definition(self) -> dict[str, Any]:
        """The judge's part of the metric definition (``metrics["extraction_judge"]``).

        ``endpoint`` is informational: two runs with the same judge model and prompt on another
        server address still compare (like package versions). No key or credential is recorded.
        """
        return {
            "adapter": self.spec.adapter, "model": self.spec.target, "prompt_version": JUDGE_PROMPT_VERSION,
            "prompt_sha256": content_hash(PROMPT_TEMPLATE, 16), "max_tokens": JUDGE_SETTINGS.max_new_tokens,
            "temperature": JUDGE_SETTINGS.temperature, "asked": "closed answers the rule leaves unparseable",
            "accepts": "exactly one option letter, or none",
            "endpoint": {"base_url": public_url(self.spec.option_dict.get("base_url"))},
        }


def parse_extractor(text: str | None) -> JudgeSpec | None:
    """``None`` for ``rule`` (or nothing), else the judge of ``llm=openai:MODEL[,key=value...]``.

    Raises:
        MedmimError: any other form, or an adapter other than ``openai``.
    """
    if text is None or text.strip() in ("", "rule"):
        return None
    kind, sep, rest = text.strip().partition("=")
    usage = "expected rule or llm=openai:MODEL[,base_url=URL]"
    if kind.strip() != "llm" or not sep or not rest.strip():
        raise MedmimError(f"--extractor {text!r}: {usage}")
    specs = parse_model_specs(rest)
    if len(specs) != 1 or not specs[0].target:
        raise MedmimError(f"--extractor {text!r}: {usage} (one model, with its name after 'openai:')")
    spec = specs[0]
    if spec.adapter != JUDGE_ADAPTER:
        raise MedmimError(f"--extractor {text!r}: the judge is a chat model on an OpenAI-compatible server; "
                          f"{usage}")
    return JudgeSpec(spec)


def public_url(value: str | None) -> str:
    """``base_url`` as recorded: without user, password, query or fragment ('adapter default' when unset)."""
    if not value:
        return "adapter default"
    kept = []
    for url in value.split("|"):
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        kept.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return "|".join(kept)


def check_judge(judge: JudgeSpec, host: PluginHost) -> None:
    """Raise one clear line when the judge cannot run here (no adapter, no backend, a bad option)."""
    if judge.spec.adapter not in host.adapters:
        raise MedmimError(f"--extractor: the judge needs the '{judge.spec.adapter}' adapter, which no plugin registers")
    reason = host.adapters.get(judge.spec.adapter).missing_prerequisite(judge.spec.target, judge.spec.option_dict)
    if reason:
        raise MedmimError(f"--extractor judge '{judge.name}' cannot run here: {reason}")


def judge_remote_host(judge: JudgeSpec, host: PluginHost) -> str | None:
    """The host off this machine that replies and options would go to, or None when local."""
    return host.adapters.get(judge.spec.adapter).remote_host(judge.spec.target, judge.spec.option_dict)


def judge_prompt(options: dict[str, str], reply: str) -> str:
    letters = list(options)
    choices = ", ".join(letters) + f" or {NONE}"
    listing = "\n".join(f"{letter}: {text}" for letter, text in options.items())
    return PROMPT_TEMPLATE.format(options=listing, reply=reply.strip(), choices=choices)


def read_verdict(text: str, options: dict[str, str]) -> tuple[str, str | None, str]:
    """(outcome, letter, reason) of the judge's raw reply: only one option letter or ``none`` is accepted."""
    answer = text.strip()
    if answer in options:
        return "decided", answer, f"the judge answered {answer}"
    if answer.lower() == NONE:
        return "none", None, "the judge answered none: the reply chooses no single option"
    shown = answer if len(answer) <= 60 else answer[:59] + "…"
    return "invalid", None, f"the judge's reply {shown!r} is not one of {', '.join(options)} or {NONE}; left unparseable"


def needs_judge(record: SampleRecord) -> bool:
    """A closed answer the rule left unparseable and no judge has settled (never asked, or its request failed)."""
    return (record.kind == "closed" and record.error is None and record.extracted == UNPARSEABLE
            and bool(record.options) and (record.judge is None or record.judge.outcome == "failed"))


def with_verdict(record: SampleRecord, verdict: JudgeRecord) -> SampleRecord:
    """The record rescored with the judge's verdict; the rule's decision stays in ``extraction``."""
    extracted = verdict.answer if verdict.outcome == "decided" and verdict.answer else UNPARSEABLE
    correct = extracted == record.gold  # a closed record's gold is the option letter
    return record.model_copy(update={"judge": verdict, "extracted": extracted, "correct": correct,
                                     "scores": {**record.scores, "accuracy": 100.0 if correct else 0.0}})


@dataclass
class JudgeTally:
    """What one judging pass did."""

    asked: int = 0
    decided: int = 0
    none: int = 0
    invalid: int = 0
    failed: int = 0
    from_cache: int = 0


class ExtractionJudge:
    """The judge, built through the plugin registry like any model (``openai:MODEL`` with its options)."""

    def __init__(self, spec: JudgeSpec, host: PluginHost) -> None:
        check_judge(spec, host)
        self.spec = spec
        entry = host.adapters.get(spec.spec.adapter)
        context = AdapterContext(seed=JUDGE_SETTINGS.seed, settings=JUDGE_SETTINGS)
        self.adapter = entry.load_factory()(spec.spec.target, spec.spec.option_dict, context)
        problem = contract_problem(self.adapter)
        if problem is not None:
            raise ContractError(f"plugin '{host.adapters.owners.get(entry.name, '')}', adapter '{entry.name}' (the "
                                f"extraction judge): the adapter its factory returned {problem}")
        self.adapter.model_id = spec.name
        self.fingerprint = self.adapter.fingerprint()

    def cache_key(self, prompt: str) -> str:
        payload = {"judge": self.fingerprint, "prompt_version": JUDGE_PROMPT_VERSION, "prompt": prompt,
                   "settings": JUDGE_SETTINGS.as_dict()}
        return content_hash(json.dumps(payload, sort_keys=True, default=str))

    async def judge(self, records: Iterable[SampleRecord], cache: ResponseCache | None,
                    done: Callable[[SampleRecord], None]) -> JudgeTally:
        """Ask about every record that :func:`needs_judge`; ``done`` receives each rescored record as it finishes."""
        tally = JudgeTally()
        limit = asyncio.Semaphore(max(1, self.adapter.capabilities.max_concurrency))

        async def one(record: SampleRecord) -> None:
            prompt = judge_prompt(record.options or {}, record.output or "")
            key = self.cache_key(prompt)
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                result: GenerationResult | BaseException = hit
            else:
                async with limit:
                    result = await self._ask(record, prompt)
            verdict = self._verdict(result, record.options or {}, cached=hit is not None)
            if hit is None and cache is not None and isinstance(result, GenerationResult):
                cache.put(key, GenerationResult(text=result.text))
                cache.commit()
            tally.asked += 1
            tally.from_cache += hit is not None
            setattr(tally, verdict.outcome, getattr(tally, verdict.outcome) + 1)
            done(with_verdict(record, verdict))

        await asyncio.gather(*(one(r) for r in records if needs_judge(r)))
        return tally

    async def _ask(self, record: SampleRecord, prompt: str) -> GenerationResult | BaseException:
        sample = Sample(key=f"judge:{record.key}", task="extraction-judge", ability="", source="", item_id=record.key,
                        file="", index=0, images=[], image_paths=[], prompt=Prompt(parts=[TextPart(text=prompt)]),
                        question=prompt, kind="open", answer="")
        try:
            results = await self.adapter.generate([GenerationRequest(sample=sample, settings=JUDGE_SETTINGS)])
            if len(results) != 1:
                return RuntimeError(f"the judge returned {len(results)} answers for one prompt")
            return results[0]
        except Exception as exc:  # a failed judge never loses the sample
            return exc

    def _verdict(self, result: GenerationResult | BaseException, options: dict[str, str], cached: bool) -> JudgeRecord:
        base = dict(judge=self.spec.name, prompt_version=JUDGE_PROMPT_VERSION, cached=cached)
        if isinstance(result, BaseException):
            message = (str(result).strip().splitlines() or [""])[0]
            return JudgeRecord(**base, outcome="failed", reason=f"the judge request failed: {type(result).__name__}: "
                               f"{message}; left unparseable, a rerun asks again")
        outcome, letter, reason = read_verdict(result.text, options)
        return JudgeRecord(**base, outcome=outcome, answer=letter, reply=result.text[:REPLY_CHARS_KEPT], reason=reason)

    async def aclose(self) -> None:
        await self.adapter.aclose()
