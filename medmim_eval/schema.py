"""The data model. Everything written to disk is a pydantic model carrying a schema version."""
from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from medmim_eval import SCHEMA_VERSION

Kind = Literal["closed", "open"]
UNPARSEABLE = "unparseable"


class TextPart(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image in the prompt; ``index`` is its position among the sample's images (0-based)."""

    model_config = ConfigDict(frozen=True)
    type: Literal["image"] = "image"
    index: int
    path: str


PromptPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Prompt(BaseModel):
    """The interleaved user message: text and image parts in their original order."""

    model_config = ConfigDict(frozen=True)
    parts: list[PromptPart]

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    @property
    def text(self) -> str:
        """The text parts joined, without image placeholders."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def render(self, image_token: str = "<image>") -> str:
        """The prompt as one string with ``image_token`` where each image goes."""
        return "".join(p.text if isinstance(p, TextPart) else image_token for p in self.parts)


class Sample(BaseModel):
    """One benchmark question. ``key`` is stable across runs: file, index and a content hash."""

    model_config = ConfigDict(frozen=True)
    key: str
    task: str
    ability: str
    source: str
    item_id: str
    file: str
    index: int
    images: list[str]
    image_paths: list[str]
    prompt: Prompt
    question: str
    kind: Kind
    options: dict[str, str] = Field(default_factory=dict)
    answer: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def image_set(self) -> tuple[str, ...]:
        """The images as a sorted tuple: items sharing it form one cluster for resampling."""
        return tuple(sorted(self.images))


class PromptRecord(BaseModel):
    """What the model actually received, as reported by the adapter."""

    n_images: int
    image_order: list[int] = Field(default_factory=list)
    image_sizes: list[tuple[int, int]] = Field(default_factory=list)
    rendered_prompt_sha256: str | None = None
    images_dropped: int = 0
    notes: list[str] = Field(default_factory=list)
    attempts: int | None = None  # requests it took to get this answer, for adapters that retry


class ModelError(BaseModel):
    type: str
    message: str
    attempts: int = 1


class ExtractionRecord(BaseModel):
    """How a closed answer was extracted: the rule version, the step that decided (or why none did), the evidence."""

    rule_version: str
    rule: str
    detail: str


JudgeOutcome = Literal["decided", "none", "invalid", "failed"]


class JudgeRecord(BaseModel):
    """What the optional LLM judge said about a closed reply the extraction rule left unparseable.

    ``outcome``: ``decided`` (it named one option letter: ``answer``), ``none`` (it said the reply
    chooses no option), ``invalid`` (its reply was not one option letter or ``none``; the sample
    stays unparseable) or ``failed`` (the request failed; the sample stays unparseable and a rerun
    asks again). ``reply`` is the judge's raw text (cut to 200 characters); ``reason`` says why in
    one line. The rule's own decision stays in ``SampleRecord.extraction``.
    """

    judge: str
    prompt_version: str
    outcome: JudgeOutcome
    answer: str | None = None
    reply: str | None = None
    reason: str
    cached: bool = False


class SampleRecord(BaseModel):
    """One line of ``samples.jsonl``: a sample answered (or failed) by one model."""

    version: int = SCHEMA_VERSION
    key: str
    task: str
    model: str
    kind: Kind
    ability: str
    source: str
    item_id: str
    n_images: int
    n_options: int | None = None
    image_set: str = ""
    gold: str
    sent: PromptRecord | None = None
    output: str | None = None
    extracted: str | None = None
    # Closed samples: the options shown and how the answer was extracted (absent in records before rule v3).
    options: dict[str, str] | None = None
    extraction: ExtractionRecord | None = None
    # Runs with an LLM judge (``--extractor llm=...``): its verdict where the rule said unparseable.
    # ``extracted``/``correct`` then hold the judge's letter when it decided.
    judge: JudgeRecord | None = None
    correct: bool | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    scores_pending: list[str] = Field(default_factory=list)
    error: ModelError | None = None
    latency_s: float | None = None
    tokens: dict[str, int] | None = None
    cached: bool = False
    finished_at: str | None = None
    control: str | None = None  # the image control of the task (medmim_eval.controls), if any
    refers_to_position: bool | None = None  # controls only: the question names an image by its place
    rotation: int | None = None  # TASK@circular only: how many places the options were rotated (medmim_eval.circular)

    @property
    def done(self) -> bool:
        return self.error is None


class ModelInfo(BaseModel):
    id: str
    spec: str
    adapter: str
    plugin: str
    fingerprint: dict[str, Any] = Field(default_factory=dict)


class TaskInfo(BaseModel):
    name: str
    kinds: list[Kind]
    files: list[str]
    sha256: str
    n_samples: int
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = Field(default_factory=dict)
    # The samples came from files[0], a Med-MIM JSON given in --tasks, evaluated under a registered
    # task's name (run --as, or a built file whose dataset card says what it stands for).
    from_file: bool = False
    control: dict[str, Any] | None = None  # an image control's definition (medmim_eval.controls)
    # run --exclude / --exclude-contaminated: the keys left out and the file they came from (medmim_eval.exclusion)
    excluded_keys: list[str] = Field(default_factory=list)
    excluded_from: str | None = None


class PluginRecord(BaseModel):
    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = Field(default_factory=list)


class PluginFailureRecord(BaseModel):
    name: str
    distribution: str | None = None
    error: str


class Invocation(BaseModel):
    started_at: str
    finished_at: str | None = None
    argv: list[str]
    status: str = "running"
    world_size: int = 1


class RescoreSource(BaseModel):
    """The run a rescored run was computed from (``medmim-eval rescore``): no model was called."""

    run_dir: str
    run_id: str
    metrics: dict[str, Any] = Field(default_factory=dict)  # the source's definitions, for the record


class RunManifest(BaseModel):
    version: int = SCHEMA_VERSION
    run_id: str
    created_at: str
    harness_version: str
    git_commit: str | None = None
    invocations: list[Invocation] = Field(default_factory=list)
    models: list[ModelInfo] = Field(default_factory=list)
    tasks: list[TaskInfo] = Field(default_factory=list)
    generation: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    plugins: list[PluginRecord] = Field(default_factory=list)
    plugin_failures: list[PluginFailureRecord] = Field(default_factory=list)
    packages: dict[str, str] = Field(default_factory=dict)
    host: dict[str, Any] = Field(default_factory=dict)
    estimated_cost_usd: dict[str, float] = Field(default_factory=dict)
    rescored_from: RescoreSource | None = None  # set by ``medmim-eval rescore``


class ResultCell(BaseModel):
    """One model x task x kind cell of ``results.json`` (or of one source inside it).

    Scores are on 0-100: closed accuracy in percent, the open score as defined in
    ``Results.metrics``. ``ci_low``/``ci_high`` bound a 95% cluster-bootstrap interval of ``score``;
    ``chance`` is the mean of 100/k over the cell's closed items (k options) and
    ``chance_normalised`` is ``100 * (acc - chance) / (100 - chance)``. ``shortcuts`` holds the
    accuracy of each text-only rule of :mod:`medmim_eval.shortcuts` on the same scored items,
    ``shortcut``/``shortcut_rule`` the best of them and ``shortcut_normalised`` is
    ``100 * (acc - shortcut) / (100 - shortcut)`` (absent where the run could not reload the
    items' options, e.g. cells recomputed from ``samples.jsonl`` alone). ``too_many_images`` counts the
    errors that are samples with more images than the model accepts (not sent, never truncated).
    ``judge_asked``/``judged``/``judge_failed`` (closed cells of runs with an LLM judge): answers the
    rule left unparseable and sent to the judge, those it mapped to an option (scored with that
    option), and those whose judge request failed (still unparseable; a rerun asks again).
    ``excluded``: items of the task the run left out (``run --exclude``, ``--exclude-contaminated``);
    views mark such cells as scores of a clean subset.
    ``TASK@circular`` cells (:mod:`medmim_eval.circular`): ``n``/``n_scored`` count answers (one per
    rotation), ``score`` is the circular accuracy over items and ``metrics`` adds ``rotation_R``.
    """

    model: str
    task: str
    kind: Kind
    source: str | None = None
    n: int
    n_scored: int
    score: float | None
    unparseable_rate: float | None = None
    errors: int = 0
    too_many_images: int = 0
    judge_asked: int = 0
    judged: int = 0
    judge_failed: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    chance: float | None = None
    chance_normalised: float | None = None
    shortcuts: dict[str, float] = Field(default_factory=dict)
    shortcut: float | None = None
    shortcut_rule: str | None = None
    shortcut_normalised: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_clusters: int = 0
    excluded: int = 0  # items of the task left out by run --exclude/--exclude-contaminated (a clean-subset cell)


class Results(BaseModel):
    version: int = SCHEMA_VERSION
    run_id: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    bootstrap: dict[str, Any] = Field(default_factory=dict)
    cells: list[ResultCell] = Field(default_factory=list)
    by_source: list[ResultCell] = Field(default_factory=list)
    # Per model, its TASK@circular answers: per letter, answers where that letter was wrong, and how many picked it.
    letter_bias: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


def content_hash(data: bytes | str, length: int = 64) -> str:
    """Hex SHA-256 of ``data`` (strings are UTF-8 encoded), cut to ``length`` characters."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]
