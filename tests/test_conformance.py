"""The adapter conformance kit (medmim_eval.testing) on every built-in adapter, and on broken adapters
that it must catch. The kit reaches these tests through the package's pytest11 entry point."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
from fake_openai_server import FakeOpenAIServer

from medmim_eval.adapter import Capabilities, GenerationResult
from medmim_eval.schema import PromptRecord
from medmim_eval.testing import ConformanceError, check_adapter

NO_WEIGHTS = {"fingerprint_weights": "a baseline has no weights"}
BASELINES = {
    "random": ("medmim_eval.adapters.baselines:make_random", {"seed": "1"}, {"seed": "2"}),
    "majority": ("medmim_eval.adapters.baselines:make_majority", {}, None),
    "longest-option": ("medmim_eval.adapters.baselines:make_longest_option", {}, None),
    "shortest-option": ("medmim_eval.adapters.baselines:make_shortest_option", {}, None),
    "question-overlap": ("medmim_eval.adapters.baselines:make_question_overlap", {}, None),
}


def test_the_kit_is_a_pytest_plugin_of_the_package(medmim_conformance: Any, medmim_samples: Any) -> None:
    """The fixtures come from the installed entry point, not from this suite's conftest."""
    import importlib.metadata as metadata

    plugins = [ep.value for ep in metadata.entry_points(group="pytest11") if ep.name == "medmim_eval"]
    assert plugins == ["medmim_eval.testing.pytest_plugin"]
    (sample,) = medmim_samples.samples([medmim_samples.item(3)])
    assert [Path(p.path).name for p in sample.prompt.images] == ["img0.png", "img1.png", "img2.png"]
    assert sample.kind == "closed" and sample.options == {"A": "the first", "B": "the second"}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_conform(name: str, medmim_conformance: Any) -> None:
    factory, options, other = BASELINES[name]
    skip = dict(NO_WEIGHTS)
    if other is None:
        skip["fingerprint_settings"] = "no setting changes its answers"
    report = medmim_conformance(factory, options=options, other_settings=(None, other) if other else None,
                                skip={**skip, "too_many_images": "takes any number of images (max_images=99)"})
    assert not report.failed
    assert {"image_order", "batch", "fingerprint", "cancellation", "aclose", "harness_run", "writes"} <= set(report.passed)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=("test-model", "other-model")) as server:
        yield server


def test_openai_adapter_conforms(openai_server: FakeOpenAIServer, medmim_conformance: Any) -> None:
    options = {"base_url": openai_server.url}
    report = medmim_conformance("medmim_eval.adapters.openai.chat:make_openai", target="test-model", options=options,
                                other_weights=("other-model", options),
                                other_settings=("test-model", {**options, "max_side": "32"}))
    assert not report.failed and "too_many_images" in report.passed and "errors" in report.passed


# --- broken adapters the kit must catch ---------------------------------------------------------------

class Sloppy:
    """A baseline-like adapter with one contract mistake chosen by ``flaw``."""

    def __init__(self, flaw: str, options: dict[str, str]) -> None:
        self.flaw = flaw
        self.model_id = "sloppy"
        self.capabilities = Capabilities(max_images=3, batch_size=4)
        self.calls = 0

    def fingerprint(self) -> dict[str, Any]:
        self.calls += 1
        return {"adapter": "sloppy", "call": self.calls} if self.flaw == "fingerprint" else {"adapter": "sloppy"}

    async def generate(self, requests: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        await asyncio.sleep(0.01)
        for request in requests:
            images = list(request.sample.prompt.images)
            if self.flaw == "order":
                images.sort(key=lambda p: p.index)
            if self.flaw == "truncate":
                images = images[:3]
            elif len(images) > 3:
                from medmim_eval.errors import TooManyImagesError

                out.append(TooManyImagesError(len(images), 3, self.model_id))
                continue
            sent = PromptRecord(n_images=len(images), image_order=[p.index for p in images])
            text = f"A {len(requests)}" if self.flaw == "batch" else "A"
            try:
                from PIL import Image

                for part in images:
                    with Image.open(part.path) as image:
                        image.load()
            except Exception as exc:
                if self.flaw == "error-text":
                    text = f"Error: {exc}"
                else:
                    out.append(exc)
                    continue
            out.append(text if self.flaw == "str" else GenerationResult(text, sent=sent))
        return out[:-1] if self.flaw == "short" and len(out) > 1 else out

    async def aclose(self) -> None:
        if self.flaw == "aclose" and self.calls < 0:
            raise RuntimeError("closed twice")
        self.calls = -1


def make_sloppy(target: str | None, options: dict[str, str], context: Any) -> Sloppy:
    return Sloppy(options.get("flaw", ""), options)


class Swallower(Sloppy):
    async def generate(self, requests: Sequence[Any]) -> list[Any]:
        try:
            await asyncio.sleep(0.2)
        except BaseException:  # the mistake: a cancelled call goes on and returns
            pass
        return [GenerationResult("A", sent=PromptRecord(n_images=len(r.sample.prompt.images),
                                                        image_order=[p.index for p in r.sample.prompt.images]))
                for r in requests]


class Littering(Sloppy):
    async def generate(self, requests: Sequence[Any]) -> list[Any]:
        Path("answers.log").write_text("left behind in the working directory\n")
        return await super().generate(requests)


SKIP = {"fingerprint_weights": "test adapter", "fingerprint_settings": "test adapter"}


def test_a_conforming_test_adapter_passes(tmp_path: Path) -> None:
    report = check_adapter(make_sloppy, tmp_path, skip=SKIP)
    assert not report.failed and len(report.passed) == 11


@pytest.mark.parametrize(("flaw", "check"), [
    ("order", "image_order"), ("batch", "batch"), ("fingerprint", "fingerprint"), ("truncate", "too_many_images"),
    ("error-text", "errors"), ("str", "results"), ("short", "results"), ("aclose", "aclose"),
])
def test_the_kit_names_each_contract_mistake(flaw: str, check: str, tmp_path: Path) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_adapter(make_sloppy, tmp_path, options={"flaw": flaw}, skip=SKIP)
    assert f"FAIL {check}:" in str(caught.value)


def test_the_kit_catches_a_swallowed_cancellation_and_a_stray_file(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match="FAIL cancellation: generate\\(\\) returned after it was cancelled"):
        check_adapter(lambda t, o, c: Swallower("", o), tmp_path / "a", skip=SKIP)
    with pytest.raises(ConformanceError, match=r"FAIL writes: files written outside the run directory: .*answers\.log"):
        check_adapter(lambda t, o, c: Littering("", o), tmp_path / "b", skip=SKIP)


def test_a_fingerprint_blind_to_the_weights_is_caught(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match="FAIL fingerprint_weights: other_weights"):
        check_adapter(make_sloppy, tmp_path, other_weights=("other", {}), skip={"fingerprint_settings": "x"})


# --- the in-process HF adapters on their tiny checkpoints (tests/tiny_models*.py) -----------------------

def _hf_case(family: str) -> tuple[str, str, dict[str, str], tuple[str, dict[str, str]], tuple[str, dict[str, str]]]:
    """(factory, checkpoint, options, other weights, other settings) for one HF family."""
    if family == "hf-llava":
        from tiny_models import tiny_llava, tiny_llava_clip_mistral

        ckpt = str(tiny_llava())
        return ("medmim_eval.adapters.hf.llava:make_hf_llava", ckpt, {"format": "mantis_llama3", "batch": "4"},
                (str(tiny_llava_clip_mistral()), {"batch": "4"}), (ckpt, {"format": "llava_med_mistral", "batch": "4"}))
    if family == "hf-idefics2":
        from tiny_models import tiny_idefics2

        ckpt = str(tiny_idefics2())
        return ("medmim_eval.adapters.hf.idefics2:make_hf_idefics2", ckpt, {"batch": "4"},
                (str(tiny_idefics2(seed=1)), {"batch": "4"}), (ckpt, {"batch": "4", "image_splitting": "1"}))
    if family == "hf-internvl":
        from tiny_models_internvl import tiny_internvl

        ckpt = str(tiny_internvl())
        return ("medmim_eval.adapters.hf.internvl.adapter:make_hf_internvl", ckpt, {"batch": "4"},
                (str(tiny_internvl(seed=1)), {"batch": "4"}), (ckpt, {"batch": "4", "max_images": "2"}))
    from tiny_models_deepseek import tiny_deepseek_vl, tiny_deepseek_vl_hybrid

    ckpt = str(tiny_deepseek_vl())
    return ("medmim_eval.adapters.hf.deepseek_vl.adapter:make_hf_deepseek_vl", ckpt, {"batch": "4"},
            (str(tiny_deepseek_vl_hybrid()), {"batch": "4"}), (ckpt, {"batch": "4", "max_images": "2"}))


@pytest.mark.parametrize("family", [
    pytest.param("hf-llava", marks=pytest.mark.slow),
    "hf-idefics2",
    pytest.param("hf-internvl", marks=pytest.mark.slow),
    pytest.param("hf-deepseek-vl", marks=pytest.mark.slow),
])
def test_in_process_hf_adapters_conform(family: str, medmim_conformance: Any) -> None:
    pytest.importorskip("transformers")
    factory, ckpt, options, other_weights, other_settings = _hf_case(family)
    report = medmim_conformance(factory, target=ckpt, options=options, other_weights=other_weights,
                                other_settings=other_settings)
    assert not report.failed and {"batch", "image_order", "too_many_images", "writes"} <= set(report.passed)


class Incomplete:
    model_id = "incomplete"
    capabilities = Capabilities()

    def fingerprint(self) -> dict[str, Any]:
        return {}

    async def generate(self, requests: Sequence[Any]) -> list[Any]:
        return []


def test_a_missing_member_or_a_failing_factory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError, match="FAIL protocol: Incomplete lacks aclose"):
        check_adapter(lambda t, o, c: Incomplete(), tmp_path / "a")

    def broken(target: Any, options: Any, context: Any) -> Any:
        raise RuntimeError("no weights at /nowhere")

    with pytest.raises(ConformanceError, match="FAIL protocol: the factory raised RuntimeError: no weights at /nowhere"):
        check_adapter(broken, tmp_path / "b")
