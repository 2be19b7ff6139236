"""The adapter conformance check: builds a real adapter from its factory in a sandbox and checks the
contract of docs/plugins.md (order of images, batch = one by one, fingerprint, too many images,
errors as exceptions, cancellation and ``aclose``, a real harness run that writes only its run directory).
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult, GenerationSettings
from medmim_eval.errors import TooManyImagesError
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import resolve_callable
from medmim_eval.schema import ImagePart, Prompt, PromptRecord, Sample

CHECKS: dict[str, str] = {
    "protocol": "model_id, capabilities (a Capabilities), fingerprint(), async generate() and async aclose() exist",
    "results": "generate() returns one GenerationResult or exception per request, in order; text is a str",
    "image_order": "result.sent lists the images in the prompt's order (image_order, n_images)",
    "batch": "a batch (or concurrent calls, for batch_size 1) answers as each request alone",
    "fingerprint": "fingerprint() is a JSON-able dict, the same across calls and across instances",
    "fingerprint_weights": "fingerprint() changes with the weights (AdapterCase.other_weights)",
    "fingerprint_settings": "fingerprint() changes with a setting that changes answers (AdapterCase.other_settings)",
    "too_many_images": "a prompt with more than max_images images is refused with TooManyImagesError, not truncated",
    "errors": "an unreadable image gives an exception, never an answer that is an error message",
    "cancellation": "a cancelled generate() raises CancelledError and the adapter still answers afterwards",
    "aclose": "aclose() returns, and may be called twice",
    "harness_run": "a real `medmim-eval run` of the adapter records one answer per sample",
    "writes": "building, answering and the run write nothing outside the run directory (and the response cache)",
}
UNDER_TEST = "conformance-under-test"
ERROR_TEXT = re.compile(r"(?i)^\s*(error|exception|failed)\b|traceback \(most recent call last\)")
MANY_IMAGES_CHECKED = 16  # above this max_images, too_many_images is skipped (the prompt would be huge)
QUESTION = "Which image is brighter?\nA: the first\nB: the second\n"


class ConformanceError(AssertionError):
    """One or more checks failed; the message lists each with what to fix."""


@dataclass(frozen=True)
class AdapterCase:
    """How to build the adapter under test, as the runner does: ``factory(target, options, context)``.

    Attributes:
        factory: the callable or ``"module:attribute"`` an ``AdapterEntry`` names.
        target, options: what ``--models NAME:TARGET,key=value`` would pass.
        other_weights: ``(target, options)`` of the same adapter on other weights; its fingerprint must differ.
        other_settings: ``(target, options)`` with one setting changed that changes answers (a prompt
            format, a dtype, a seed); its fingerprint must differ.
        skip: check name -> why it does not apply to this adapter (shown in the report).
        max_new_tokens: generation length for every check (small keeps it quick).
        hang_guard_s: a ``generate`` call taking longer fails its check instead of hanging the suite.
    """

    factory: str | Callable[..., Any]
    target: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    other_weights: tuple[str | None, Mapping[str, str]] | None = None
    other_settings: tuple[str | None, Mapping[str, str]] | None = None
    skip: Mapping[str, str] = field(default_factory=dict)
    max_new_tokens: int = 8
    hang_guard_s: float = 600.0

    def build(self, target: str | None = None, options: Mapping[str, str] | None = None, *,
              default: bool = True) -> Any:
        factory = resolve_callable(self.factory)
        context = AdapterContext(settings=GenerationSettings(max_new_tokens=self.max_new_tokens))
        return factory(self.target if default else target, dict(self.options if options is None else options), context)


@dataclass
class ConformanceReport:
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return ([f"FAIL {name}: {why}" for name, why in self.failed.items()]
                + [f"skip {name}: {why}" for name, why in self.skipped.items()]
                + [f"ok   {name}" for name in self.passed])


class _Failed(Exception):
    """A check's verdict (internal)."""


class SampleKit:
    """Real Med-MIM items and images on disk, loaded through the harness's own task loader."""

    def __init__(self, folder: Path) -> None:
        from PIL import Image

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.names = []
        for j in range(MANY_IMAGES_CHECKED + 1):
            name = f"img{j}.png"
            Image.new("RGB", (48, 40 + 8 * (j % 4)), ((70 * j) % 256, (255 - 60 * j) % 256, (30 + 40 * j) % 256)).save(folder / name)
            self.names.append(name)
        (folder / "broken.png").write_bytes(b"this is not a PNG file\n")
        self._count = 0
        self.count = 1  # images per prompt the adapter accepts (set by the direct checks)
        self.written: set[str] = set()  # files the kit itself writes after the snapshot

    def item(self, n_images: int, *, kind: str = "closed", broken: bool = False, tag: str = "") -> dict[str, Any]:
        images = self.names[:n_images]
        if broken:
            images = [*images[:-1], "broken.png"]
        user = "<image>" * n_images + (QUESTION if kind == "closed" else "Describe what you see.")
        answer = "A: the first" if kind == "closed" else "two images"
        return {"id": f"conformance-{tag or n_images}", "images": images, "source": "CONFORMANCE_multichoice",
                "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}

    def write_task(self, items: list[dict[str, Any]], stem: str) -> Path:
        path = self.folder / f"{stem}.json"
        path.write_text(json.dumps(items, indent=1))
        self.written.add(str(path))
        return path

    def samples(self, items: list[dict[str, Any]]) -> list[Sample]:
        from medmim_eval.medmim_format import load_medmim_file

        self._count += 1
        path = self.write_task(items, f"direct{self._count}")
        return load_medmim_file(path, task="conformance", ability="conformance", image_root=lambda _tag: self.folder)


def reorder(sample: Sample, order: Sequence[int]) -> Sample:
    """``sample`` with its image parts in ``order`` (of their indices), text parts where they were."""
    images = {p.index: p for p in sample.prompt.images}
    queue = iter([images[i] for i in order])
    parts = [next(queue) if isinstance(p, ImagePart) else p for p in sample.prompt.parts]
    return sample.model_copy(update={"prompt": Prompt(parts=parts), "key": f"{sample.key}@{''.join(map(str, order))}"})


def check_adapter(case: AdapterCase | str | Callable[..., Any], workdir: Path, **fields: Any) -> ConformanceReport:
    """Run every check of :data:`CHECKS` on the adapter ``case`` builds; ``workdir`` is an empty folder.

    ``case`` may be a factory, with the :class:`AdapterCase` fields as keywords. Returns the report;
    raises :class:`ConformanceError` listing every failed check.
    """
    if not isinstance(case, AdapterCase):
        case = AdapterCase(case, **fields)
    report = ConformanceReport()
    box = Path(workdir).resolve()
    kit = SampleKit(box / "data")
    watched = _watched_targets(case)
    with _sandbox(box) as allowed:
        before = {root: _snapshot(root) for root in (box, *watched)}
        asyncio.run(_direct_checks(case, kit, report))
        if "protocol" not in report.failed:
            _check("harness_run", case, report, lambda: _harness_run(case, kit, box / "run", box / "harness-cache"))
        after = {root: _snapshot(root) for root in (box, *watched)}
    _check("writes", case, report, lambda: _no_stray_writes(before, after, allowed, kit.written))
    if report.failed:
        raise ConformanceError("adapter conformance failed:\n  " + "\n  ".join(report.lines()))
    return report


def _check(name: str, case: AdapterCase, report: ConformanceReport, body: Callable[[], Any]) -> None:
    if name in case.skip:
        report.skipped[name] = case.skip[name]
        return
    try:
        body()
    except _Failed as exc:
        report.failed[name] = str(exc)
    except Exception as exc:  # an adapter bug surfaces as this check's failure, with its type
        report.failed[name] = f"raised {type(exc).__name__}: {exc}"
    else:
        report.passed.append(name)


async def _acheck(name: str, case: AdapterCase, report: ConformanceReport, body: Callable[[], Any]) -> None:
    if name in case.skip:
        report.skipped[name] = case.skip[name]
        return
    try:
        await body()
    except _Failed as exc:
        report.failed[name] = str(exc)
    except asyncio.TimeoutError:
        report.failed[name] = f"a generate() call did not return within {case.hang_guard_s:g} s"
    except Exception as exc:
        report.failed[name] = f"raised {type(exc).__name__}: {exc}"
    else:
        report.passed.append(name)


async def _generate(adapter: Any, case: AdapterCase, samples: Sequence[Sample]) -> list[Any]:
    settings = GenerationSettings(max_new_tokens=case.max_new_tokens)
    requests = [GenerationRequest(sample=s, settings=settings) for s in samples]
    prepare = getattr(adapter, "prepare", None)
    if callable(prepare):  # as the runner does, once per task before its samples
        prepare(samples[0].task, list(samples))
    return list(await asyncio.wait_for(adapter.generate(requests), timeout=case.hang_guard_s))


async def _answer(adapter: Any, case: AdapterCase, sample: Sample) -> Any:
    """The one result for ``sample``: returned, or the exception ``generate`` raised."""
    try:
        (result,) = await _generate(adapter, case, [sample])
    except (asyncio.TimeoutError, asyncio.CancelledError):
        raise
    except Exception as exc:
        return exc
    return result


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return type(a) is type(b)
    return (a.text, a.sent) == (b.text, b.sent)


def _show(result: Any) -> str:
    if isinstance(result, BaseException):
        return f"{type(result).__name__}({str(result)[:80]!r})"
    return repr(getattr(result, "text", result))[:100]


async def _direct_checks(case: AdapterCase, kit: SampleKit, report: ConformanceReport) -> None:
    try:
        adapter = case.build()
    except Exception as exc:
        report.failed["protocol"] = f"the factory raised {type(exc).__name__}: {exc}"
        return
    closed = False
    try:
        await _acheck("protocol", case, report, lambda: _protocol(adapter))
        if "protocol" in report.failed:
            return
        caps: Capabilities = adapter.capabilities
        count = kit.count = max(caps.min_images, min(2, caps.max_images))
        two = kit.samples([kit.item(count), kit.item(count, kind="open", tag="open")])
        await _acheck("results", case, report, lambda: _results(adapter, case, two))
        await _acheck("image_order", case, report, lambda: _image_order(adapter, case, kit, caps))
        await _acheck("batch", case, report, lambda: _batch(adapter, case, two, caps))
        await _acheck("fingerprint", case, report, lambda: _fingerprint(adapter, case))
        await _acheck("fingerprint_weights", case, report, lambda: _fingerprint_differs(adapter, case, "other_weights"))
        await _acheck("fingerprint_settings", case, report, lambda: _fingerprint_differs(adapter, case, "other_settings"))
        if caps.max_images > MANY_IMAGES_CHECKED and "too_many_images" not in case.skip:
            report.skipped["too_many_images"] = f"max_images is {caps.max_images} (checked up to {MANY_IMAGES_CHECKED})"
        else:
            await _acheck("too_many_images", case, report, lambda: _too_many(adapter, case, kit, caps))
        await _acheck("errors", case, report, lambda: _errors(adapter, case, kit, count))
        await _acheck("cancellation", case, report, lambda: _cancellation(adapter, case, two[0]))
        closed = True
        await _acheck("aclose", case, report, lambda: _aclose(adapter))
    finally:
        if not closed and callable(getattr(adapter, "aclose", None)):
            await adapter.aclose()


async def _protocol(adapter: Any) -> None:
    missing = [m for m in ("model_id", "capabilities", "fingerprint", "generate", "aclose") if not hasattr(adapter, m)]
    if missing:
        raise _Failed(f"{type(adapter).__name__} lacks {', '.join(missing)} (see the ModelAdapter Protocol)")
    if not isinstance(adapter.model_id, str) or not adapter.model_id:
        raise _Failed(f"model_id is {adapter.model_id!r}; give a non-empty str")
    if not isinstance(adapter.capabilities, Capabilities):
        raise _Failed(f"capabilities is a {type(adapter.capabilities).__name__}, not medmim_eval.adapter.Capabilities")
    for name in ("generate", "aclose"):
        if not inspect.iscoroutinefunction(getattr(adapter, name)):
            raise _Failed(f"{name} must be an `async def` method")
    caps = adapter.capabilities
    if caps.batch_size < 1 or caps.max_concurrency < 1 or caps.max_images < max(1, caps.min_images):
        raise _Failed(f"capabilities make no sense: {caps}")


async def _results(adapter: Any, case: AdapterCase, samples: list[Sample]) -> None:
    results = await _generate(adapter, case, samples)
    if len(results) != len(samples):
        raise _Failed(f"generate returned {len(results)} items for {len(samples)} requests; return one per request")
    for sample, result in zip(samples, results):
        if isinstance(result, BaseException):
            continue
        if not isinstance(result, GenerationResult):
            raise _Failed(f"generate returned a {type(result).__name__} for {sample.kind} sample {sample.item_id}; "
                          "return GenerationResult(text=...) or the exception")
        if not isinstance(result.text, str):
            raise _Failed(f"GenerationResult.text is a {type(result.text).__name__}; it must be a str")
        if result.sent is not None and not isinstance(result.sent, PromptRecord):
            raise _Failed(f"GenerationResult.sent is a {type(result.sent).__name__}; give a PromptRecord or None")
    if all(isinstance(r, BaseException) for r in results):
        raise _Failed(f"every request failed: {_show(results[0])}")


async def _image_order(adapter: Any, case: AdapterCase, kit: SampleKit, caps: Capabilities) -> None:
    if caps.max_images < 2:
        raise _Failed("max_images < 2: nothing to order; skip this check with that reason")
    n = min(3, caps.max_images)
    (base,) = kit.samples([kit.item(n, tag="order")])
    for order in (list(range(n)), list(reversed(range(n)))):
        sample = reorder(base, order)
        result = await _answer(adapter, case, sample)
        if isinstance(result, BaseException):
            raise _Failed(f"a {n}-image prompt failed: {_show(result)}")
        sent = result.sent
        if sent is None:
            raise _Failed("no GenerationResult.sent: report what reached the model, "
                          "PromptRecord(n_images=..., image_order=[part.index for part in the images sent])")
        if sent.n_images != n or list(sent.image_order) != order:
            raise _Failed(f"images in the prompt in order {order}, but sent says n_images={sent.n_images}, "
                          f"image_order={list(sent.image_order)}; send sample.prompt.images in prompt order")


async def _batch(adapter: Any, case: AdapterCase, two: list[Sample], caps: Capabilities) -> None:
    size = min(max(caps.batch_size, caps.max_concurrency), 3)
    if size < 2:
        raise _Failed("batch_size and max_concurrency are both 1: nothing to compare; skip with that reason")
    samples = [two[0], reorder(two[0], list(reversed(range(len(two[0].images))))), two[1]][:size]
    alone = [await _answer(adapter, case, s) for s in samples]
    if caps.batch_size > 1:
        how = f"one batch of {len(samples)}"
        together = await _generate(adapter, case, samples[:caps.batch_size])
        together += [await _answer(adapter, case, s) for s in samples[caps.batch_size:]]
    else:
        how = f"{len(samples)} concurrent calls"
        together = list(await asyncio.gather(*(_answer(adapter, case, s) for s in samples)))
    for sample, one, joint in zip(samples, alone, together):
        if not _same(one, joint):
            raise _Failed(f"{how}: {sample.item_id} ({sample.kind}) got {_show(joint)}, alone {_show(one)}; "
                          "batching must not change an answer (padding side, attention mask, per-request settings)")


def _fingerprint_json(adapter: Any) -> str:
    fingerprint = adapter.fingerprint()
    if not isinstance(fingerprint, dict):
        raise _Failed(f"fingerprint() returned a {type(fingerprint).__name__}, not a dict")
    try:
        return json.dumps(fingerprint, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise _Failed(f"fingerprint() is not JSON: {exc}") from None


async def _fingerprint(adapter: Any, case: AdapterCase) -> None:
    first, again = _fingerprint_json(adapter), _fingerprint_json(adapter)
    if first != again:
        raise _Failed(f"two calls differ: {first} vs {again}; leave out times, addresses and counters")
    twin = case.build()
    try:
        other = _fingerprint_json(twin)
    finally:
        await twin.aclose()
    if other != first:
        raise _Failed(f"a second instance with the same target and options differs: {first} vs {other}")


async def _fingerprint_differs(adapter: Any, case: AdapterCase, attribute: str) -> None:
    variant = getattr(case, attribute)
    what = "weights" if attribute == "other_weights" else "settings"
    if variant is None:
        raise _Failed(f"give AdapterCase.{attribute}=(target, options) to check that fingerprint() follows the "
                      f"{what}, or skip={{'fingerprint_{what}': 'why it has none'}}")
    other = case.build(variant[0], variant[1], default=False)
    try:
        theirs = _fingerprint_json(other)
    finally:
        await other.aclose()
    if theirs == _fingerprint_json(adapter):
        raise _Failed(f"{attribute} {variant} has the same fingerprint {theirs}: the response cache would serve "
                      "answers of the other model; put what changes answers into fingerprint()")


async def _too_many(adapter: Any, case: AdapterCase, kit: SampleKit, caps: Capabilities) -> None:
    (sample,) = kit.samples([kit.item(caps.max_images + 1, tag="too-many")])
    result = await _answer(adapter, case, sample)
    if not isinstance(result, TooManyImagesError):
        raise _Failed(f"{caps.max_images + 1} images with max_images={caps.max_images} gave {_show(result)}; "
                      "return TooManyImagesError(n, max_images, model_id) for that request (never drop images)")


async def _errors(adapter: Any, case: AdapterCase, kit: SampleKit, count: int) -> None:
    (sample,) = kit.samples([kit.item(count, broken=True, tag="broken")])
    result = await _answer(adapter, case, sample)
    if isinstance(result, BaseException):
        return
    if not isinstance(result, GenerationResult) or ERROR_TEXT.search(result.text or ""):
        raise _Failed(f"an unreadable image gave the answer {_show(result)}; return (or raise) the exception "
                      "so the sample is recorded as an error and retried, not scored as a wrong answer")


async def _cancellation(adapter: Any, case: AdapterCase, sample: Sample) -> None:
    settings = GenerationSettings(max_new_tokens=case.max_new_tokens)
    if callable(getattr(adapter, "prepare", None)):
        adapter.prepare(sample.task, [sample])
    task = asyncio.ensure_future(adapter.generate([GenerationRequest(sample=sample, settings=settings)]))
    await asyncio.sleep(0)
    if not task.done():
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=case.hang_guard_s)
        except asyncio.CancelledError:
            pass
        else:
            raise _Failed("generate() returned after it was cancelled; let CancelledError propagate "
                          "(never catch BaseException)")
    after = await _answer(adapter, case, sample)
    if not isinstance(after, GenerationResult):
        raise _Failed(f"after a cancelled call the adapter answered {_show(after)}")


async def _aclose(adapter: Any) -> None:
    await adapter.aclose()
    await adapter.aclose()


class _UnderTest:
    """A plugin registering the adapter under test for the harness run."""

    def __init__(self, case: AdapterCase) -> None:
        self.case = case

    @hookimpl
    def register_adapters(self, register: Callable[[object], None]) -> None:
        from medmim_eval.registry import AdapterEntry

        register(AdapterEntry(name=UNDER_TEST, description="the adapter under conformance check",
                              factory=self.case.factory, target="optional"))


def _harness_run(case: AdapterCase, kit: SampleKit, run_dir: Path, cache: Path) -> None:
    from medmim_eval.adapter import ModelSpec
    from medmim_eval.datadir import DataPaths
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.run_setup import RunOptions, prepare_run
    from medmim_eval.runner import run_prepared
    from medmim_eval.tasks_api import TaskSelection

    host = create_plugin_host(autoload=False, extra_plugins=(_UnderTest(case),))
    task = kit.write_task([kit.item(kit.count, tag="run-a"), kit.item(kit.count, tag="run-b")], "harness")
    spec = ModelSpec(UNDER_TEST, case.target, tuple(case.options.items()))
    options = RunOptions(models=[spec], tasks=[TaskSelection("file:harness", ("closed",), path=task)],
                         output=run_dir, data=DataPaths(root=kit.folder), cache_dir=cache,
                         settings=GenerationSettings(max_new_tokens=case.max_new_tokens))
    summary = run_prepared(prepare_run(options, host), host)
    if summary.model_failures:
        raise _Failed(f"the run could not use the adapter: {summary.model_failures}")
    lines = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    if len(lines) != 2:
        raise _Failed(f"the run recorded {len(lines)} samples, not 2")
    failed = [r for r in lines if r.get("error") and r["error"]["type"] not in ("TooManyImagesError", "TooFewImagesError")]
    if failed:
        raise _Failed(f"the run recorded errors: {[r['error'] for r in failed]}")


def _watched_targets(case: AdapterCase) -> list[Path]:
    """The adapter's weights folder (or file), when the target is a local path: it must not change."""
    targets = [case.target] + [v[0] for v in (case.other_weights, case.other_settings) if v]
    out = []
    for target in targets:
        if target and os.path.exists(target):
            out.append(Path(target).resolve())
    return sorted(set(out))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if root.is_file():
        stat = root.stat()
        return {str(root): (stat.st_mtime_ns, stat.st_size)}
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _no_stray_writes(before: dict[Path, dict[str, tuple[int, int]]], after: dict[Path, dict[str, tuple[int, int]]],
                     allowed: list[Path], own: set[str]) -> None:
    stray = []
    for root, files in after.items():
        for path, stat in files.items():
            if before[root].get(path) == stat or path in own or any(Path(path).is_relative_to(a) for a in allowed):
                continue
            stray.append(path)
    if stray:
        shown = ", ".join(sorted(stray)[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise _Failed(f"files written outside the run directory: {shown}; write only under the run directory "
                      "(or keep state in memory), never into the weights folder, the working directory or $HOME")


@contextmanager
def _sandbox(box: Path) -> Iterator[list[Path]]:
    """Point the working directory, $HOME, the XDG folders, $TMPDIR and medmim's cache into ``box``."""
    folders = {name: box / name.lower() for name in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "TMPDIR")}
    folders["MEDMIM_CACHE_DIR"] = box / "harness-cache"
    for folder in (*folders.values(), box / "cwd"):
        folder.mkdir(parents=True, exist_ok=True)
    saved_env = {name: os.environ.get(name) for name in folders}
    saved_cwd, saved_tmp = os.getcwd(), tempfile.tempdir
    os.environ.update({name: str(folder) for name, folder in folders.items()})
    tempfile.tempdir = str(folders["TMPDIR"])
    os.chdir(box / "cwd")
    try:
        yield [box / "run", folders["MEDMIM_CACHE_DIR"]]
    finally:
        os.chdir(saved_cwd)
        tempfile.tempdir = saved_tmp
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
