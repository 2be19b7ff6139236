"""Training recipes in-process: label masking, prompt identity with evaluation, data ablations, errors,
and a few optimiser steps lowering the loss (real transformers classes on tiny checkpoints)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from training_cases import counted_items, lineage, synth_train

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from medmim_eval.adapter import AdapterContext  # noqa: E402
from medmim_eval.errors import DataError, MedmimError  # noqa: E402
from medmim_eval.prompt_formats import render_training  # noqa: E402
from medmim_eval.training_recipes.data import load_training_data, read_file  # noqa: E402
from medmim_eval.training_recipes.encoding import IGNORE, Collator, ExampleEncoder  # noqa: E402
from medmim_eval.training_recipes.options import build_config, steps_per_epoch  # noqa: E402
from medmim_eval.training_recipes.sft import TrainRequest, run_sft  # noqa: E402

IMAGE_TOKENS = {"llava": 64, "idefics2": 8}  # per image: 8 x 8 patches; the perceiver's 8 latents


@pytest.fixture(scope="module")
def adapters() -> dict[str, Any]:
    from tiny_models import tiny_idefics2, tiny_llava

    from medmim_eval.adapters.hf.idefics2 import make_hf_idefics2
    from medmim_eval.adapters.hf.llava import make_hf_llava

    return {"llava": make_hf_llava(str(tiny_llava()), {"format": "mantis_llama3"}, AdapterContext()),
            "idefics2": make_hf_idefics2(str(tiny_idefics2()), {}, AdapterContext())}


@pytest.mark.parametrize("family", ["llava", "idefics2"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_exactly_the_response_tokens_carry_labels(adapters: dict[str, Any], family: str, count: int,
                                                  tmp_path: Path) -> None:
    adapter = adapters[family]
    (example,) = read_file(counted_items(tmp_path, [count], answers=["C: the third"]))
    row = ExampleEncoder(adapter.processor, adapter.format, family)(example)
    # What evaluation sends for the same sample, through the adapter's own code.
    text, images, _ = adapter.prepare_sample(example.sample)
    assert render_training(adapter.format, example.sample.prompt, example.response).prompt == text
    eval_ids = adapter.encode([text], [images])["input_ids"][0].tolist()
    n = len(eval_ids)
    ids, labels = row["input_ids"].tolist(), row["labels"].tolist()
    assert ids[:n] == eval_ids
    assert labels[:n] == [IGNORE] * n
    assert labels[n:] == ids[n:] and len(ids) > n
    response = adapter.tokenizer.decode(ids[n:], clean_up_tokenization_spaces=False)
    assert response == adapter.format.response_prefix + "C: the third" + adapter.format.response_suffix
    image_id = adapter.model.config.image_token_id
    assert ids.count(image_id) == count * IMAGE_TOKENS[family]
    assert all(label != image_id for label in labels)


@pytest.mark.parametrize("family", ["llava", "idefics2"])
def test_a_batch_of_one_two_and_three_images_gives_a_finite_loss(adapters: dict[str, Any], family: str,
                                                                 tmp_path: Path) -> None:
    import torch

    adapter = adapters[family]
    examples = read_file(counted_items(tmp_path, [1, 3, 2]))
    encoder = ExampleEncoder(adapter.processor, adapter.format, family)
    rows = [encoder(e) for e in examples]
    batch = Collator(adapter.tokenizer.pad_token_id, family)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, longest)
    assert int((batch["labels"] != IGNORE).sum()) == sum(int((r["labels"] != IGNORE).sum()) for r in rows)
    if family == "llava":
        assert batch["pixel_values"].shape[0] == 6
    else:
        assert batch["pixel_values"].shape[:2] == (3, 3)
    with torch.no_grad():
        loss = adapter.model(**{k: v.to(adapter.model.dtype) if k == "pixel_values" else v for k, v in batch.items()}).loss
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_encoding_ahead_in_worker_processes_gives_the_rows_of_the_lazy_path(adapters: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    import torch

    from medmim_eval.training_recipes.encoding import EncodedDataset

    adapter = adapters["llava"]
    examples = [e for path in synth_train(tmp_path / "synth", n_closed=5, n_open=2).values() for e in read_file(path)]
    encoder = ExampleEncoder(adapter.processor, adapter.format, "llava")
    lazy = EncodedDataset(examples, encoder)
    ahead = EncodedDataset(examples, encoder, cache=True)
    ahead[3]  # one already cached: encode_all leaves it and encodes the others
    ahead.encode_all(workers=2, chunk=5)
    assert len(ahead._cache) == len(examples) == 28
    for index in range(len(examples)):
        want, got = lazy[index], ahead[index]
        assert sorted(want) == sorted(got)
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (index, key)
    # A bad item raised in a worker process reaches the caller as its DataError, naming the item.
    strict = EncodedDataset(examples, ExampleEncoder(adapter.processor, adapter.format, "llava", max_length=20),
                            cache=True)
    with pytest.raises(DataError, match=r"synth-.*: \d+ tokens, more than max_length=20"):
        strict.encode_all(workers=2)


def test_ablations_change_the_data_as_documented(tmp_path: Path) -> None:
    files = synth_train(tmp_path / "synth", n_closed=8, n_open=4)
    # Named and tagged as dataset_builders/composed.py writes it.
    composed = counted_items(tmp_path / "composed", [2, 3, 2, 2], name="composed_coreference.json",
                             source="LLaVA_Med_composed_conv")
    paths = [*files.values(), composed]
    everything = load_training_data(paths, build_config({}))
    assert len(everything.examples) == 4 * 12 + 4
    assert everything.ablation["abilities_before"] == {"co-reference": 16, "comparison": 12, "reasoning": 12,
                                                       "temporal": 12}
    no_temporal = load_training_data(paths, build_config({"drop_ability": "temporal"}))
    assert len(no_temporal.examples) == 40 and all(e.ability != "temporal" for e in no_temporal.examples)
    no_composed = load_training_data(paths, build_config({"composed": "false"}))
    assert len(no_composed.examples) == 48 and not any(e.composed for e in no_composed.examples)
    keys = {f: [e.sample.key for e in load_training_data(paths, build_config({"fraction": str(f), "seed": "5"})).examples]
            for f in (0.25, 0.5, 0.75)}
    assert [len(k) for k in keys.values()] == [13, 26, 39]
    assert set(keys[0.25]) < set(keys[0.5]) < set(keys[0.75])
    again = [e.sample.key for e in load_training_data(paths, build_config({"fraction": "0.25", "seed": "5"})).examples]
    other = [e.sample.key for e in load_training_data(paths, build_config({"fraction": "0.25", "seed": "6"})).examples]
    assert again == keys[0.25] and other != keys[0.25]


def test_a_bad_item_or_a_missing_image_is_one_error_naming_file_and_item(tmp_path: Path) -> None:
    path = counted_items(tmp_path, [2, 2, 3])
    items = json.loads(path.read_text())
    items[1]["conversation"][0]["content"] = "<image>" + items[1]["conversation"][0]["content"]
    path.write_text(json.dumps(items))
    with pytest.raises(DataError, match=r"(?s)counts.json: 1 invalid item.*item 1 \(id item-1\): 3 <image> token"):
        read_file(path)
    items[1]["conversation"][0]["content"] = items[1]["conversation"][0]["content"][len("<image>"):]
    path.write_text(json.dumps(items))
    (tmp_path / items[2]["images"][1]).unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) not found:\n  item 2 \(id item-2\): .*_2_1.png"):
        read_file(path)
    result = run_cli("train", "sft-llava", "--data", str(path), "--base", str(tmp_path), "--output",
                     str(tmp_path / "out"))
    assert result.returncode == 2 and "config.json" in result.stderr and "Traceback" not in result.stderr


def test_options_are_checked_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(MedmimError, match="unknown training option 'lrr'.*Did you mean lr"):
        build_config({"lrr": "1"})
    with pytest.raises(MedmimError, match="fraction must be one of 0.25, 0.5, 0.75, 1.0"):
        build_config({"fraction": "0.3"})
    with pytest.raises(MedmimError, match=r"lora=.maybe.: expected true or false"):
        build_config({"lora": "maybe"})
    assert build_config({"qlora": "true"}).lora
    result = run_cli("train", "sft-llava", "--data", "x.json", "--base", ".", "--output", str(tmp_path), "lr=fast")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: training option lr='fast': could not convert string to float: 'fast'"]


def test_list_recipes_and_the_shipped_accelerate_configs() -> None:
    import yaml

    listed = run_cli("list", "recipes")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["sft-idefics2", "sft-llava", "tiny"]
    expected = {"zero2": ("DEEPSPEED", 2), "zero3": ("DEEPSPEED", 3), "fsdp": ("FSDP", None)}
    for name, (kind, stage) in expected.items():
        result = run_cli("train", "--config", name)
        config = yaml.safe_load(Path(result.stdout.strip()).read_text())
        assert config["distributed_type"] == kind and config["num_processes"] == 4
        assert config["mixed_precision"] == "bf16"
        assert config.get("deepspeed_config", {}).get("zero_stage") == stage
    assert "lora_r" in run_cli("train", "--options").stdout


def mean_loss(folder: Path, examples: list[Any]) -> float:
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from medmim_eval.prompt_formats import get_format

    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    encoder = ExampleEncoder(processor, get_format("mantis_llama3"), "llava")
    batch = Collator(processor.tokenizer.pad_token_id, "llava")([encoder(e) for e in examples])
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_the_response(tmp_path: Path) -> None:
    from tiny_models import tiny_llava

    files = list(synth_train(tmp_path / "synth", n_closed=4, n_open=2).values())
    base = tiny_llava()
    request = TrainRequest(recipe="sft-llava", recipe_version="1", output=tmp_path / "out", data=files, base=base,
                           overrides={"max_steps": "12", "lr": "2e-3", "batch_size": "4", "grad_accum": "1",
                                      "warmup": "0", "save_steps": "100", "logging_steps": "1",
                                      "train_vision": "true"}, progress=False)
    run_sft(request, "llava")
    examples = load_training_data(files, build_config({})).examples
    before, after = mean_loss(base, examples), mean_loss(tmp_path / "out", examples)
    assert after < 0.7 * before, (before, after)
    record = lineage(tmp_path / "out")
    assert record["steps"] == 12 and record["final_loss"] < record["first_loss"]
    assert record["data"]["files"][0]["sha256"] and record["base"]["config_sha256"]
    assert record["hyperparameters"]["lr"] == 2e-3 and record["packages"]["transformers"]


def test_a_run_encodes_ahead_only_when_it_reaches_enough_of_the_items(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from tiny_models import tiny_llava

    from medmim_eval.training_recipes.sft import encodes_ahead

    config = build_config({"batch_size": "16", "grad_accum": "1", "encode_workers": "2"})
    assert encodes_ahead(5760, 2500, config)  # the demo: many epochs
    assert encodes_ahead(5760, 180, config) and not encodes_ahead(5760, 179, config)  # half of the items, with 2
    assert not encodes_ahead(5760, 2, config)  # a 2-step smoke run reaches 32 items
    files = list(synth_train(tmp_path / "synth", n_closed=4, n_open=2).values())
    request = TrainRequest(recipe="sft-llava", recipe_version="1", output=tmp_path / "out", data=files, base=tiny_llava(),
                           overrides={"max_steps": "1", "batch_size": "2", "grad_accum": "1", "save_steps": "100",
                                      "cache_encoded": "true", "encode_workers": "2"}, progress=False)
    run_sft(request, "llava")
    err = capfd.readouterr().err
    assert "sft-llava: 1 steps reach 2 of " in err and "each is encoded when reached" in err
    assert "processes" not in err.split("1 steps reach")[1] and lineage(tmp_path / "out")["steps"] == 1


def test_steps_per_epoch_formula() -> None:
    assert steps_per_epoch(20, 2, 2, 2) == 3  # 10 batches, 5 per process, ceil(5 / 2)
    assert steps_per_epoch(24, 4, 1, 1) == 6 and steps_per_epoch(1, 8, 4, 8) == 1


def test_the_released_instruction_file_reads_and_its_absent_images_are_named(shared_data: Path, tmp_path: Path) -> None:
    """The official Comparison training file: every item parses; its MS-CXR-T/LUMIERE images are credentialed
    downloads that are absent here, so the error names them and the fix."""
    from medmim_eval.datadir import DataPaths

    path = shared_data / "med-mim" / "Med_MIM_train_inherent_Comparison.json"
    with pytest.raises(DataError) as caught:
        read_file(path, DataPaths.resolve(tmp_path / "data"))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "image(s) not found" in message and "--data-dir" in message
    assert f"{tmp_path / 'data' / 'ms-cxr-t'}/p1" in message  # resolved under the source's own folder


def test_the_plateau_check_stops_only_a_run_whose_recent_loss_is_too_high() -> None:
    from types import SimpleNamespace

    from medmim_eval.training_recipes.plateau import PlateauCheck, TrainingPlateau, check_stopped, window_mean

    history = [{"loss": 2.0, "step": 10}, {"loss": 0.7, "step": 20}, {"loss": 0.5, "step": 30}, {"lr": 1, "step": 30}]
    assert window_mean(history, 30, 20) == pytest.approx(0.6) and window_mean(history, 5, 5) is None

    def run(limit: float, steps: tuple[int, ...] = (10, 20, 30, 40)) -> PlateauCheck:
        check = PlateauCheck(step=30, window=20, limit=limit)
        for step in steps:
            state = SimpleNamespace(global_step=step, log_history=[e for e in history if e["step"] <= step])
            control = check.on_log(None, state, SimpleNamespace(should_training_stop=False, should_save=True))
            if control.should_training_stop:
                assert step == 30 and not control.should_save
                break
        return check

    assert run(0.59).stopped_at == 30
    with pytest.raises(TrainingPlateau,
                       match=r"seed 4: the mean loss over steps 11-30 was 0\.6000, above plateau_loss=0\.59.*seed=N"):
        check_stopped(run(0.59), 4)
    kept = run(0.61)
    assert kept.checked and kept.stopped_at is None
    check_stopped(kept, 4)  # nothing raised
    assert run(0.0, steps=(10, 20)).checked is False  # not reached: never checked


def test_the_encoding_key_ignores_weights_but_not_the_processor_or_the_data(tmp_path: Path) -> None:
    from medmim_eval.training_recipes.encoding import EncodedRows, encoding_key, offered_rows, offering

    bases = []
    for seed in (0, 1):
        base = tmp_path / f"base{seed}"
        base.mkdir()
        (base / "tokenizer.json").write_text('{"model": "bpe"}')
        (base / "config.json").write_text('{"model_type": "llava"}')
        (base / "model.safetensors").write_bytes(bytes([seed]) * 64)
        (base / "medmim_tiny.json").write_text(json.dumps({"seed": seed}))  # a record, not a processor input
        bases.append(base)
    files = [{"path": "/d/temporal.json", "sha256": "ab"}]

    def key(base: Path, **change: Any) -> str:
        args = {"family": "llava", "format_name": "mantis_llama3", "max_length": 1024, "files": files, "ablation": {}}
        return encoding_key(base, **{**args, **change})

    assert key(bases[0]) == key(bases[1])  # other weights, same tokenizer and processor
    assert key(bases[0]) != key(bases[0], files=[{"path": "/d/temporal.json", "sha256": "cd"}])
    assert key(bases[0]) != key(bases[0], ablation={"fraction": 0.5})
    assert key(bases[0]) != key(bases[0], max_length=512)
    (bases[1] / "tokenizer.json").write_text('{"model": "bpe", "merges": []}')
    assert key(bases[0]) != key(bases[1])
    rows = {0: {"input_ids": [1]}}
    with offering(EncodedRows(key(bases[0]), rows)):
        assert offered_rows(key(bases[0])) is rows and offered_rows(key(bases[1])) is None
    assert offered_rows(key(bases[0])) is None  # only within the block


@pytest.mark.slow
def test_a_tiny_run_still_on_its_plateau_starts_over_from_the_next_seed(tmp_path: Path,
                                                                         capfd: pytest.CaptureFixture[str]) -> None:
    from medmim_eval.training_recipes.tiny import _try_in_folder, tiny_recipe

    files = list(synth_train(tmp_path / "synth", n_closed=4, n_open=2).values())
    overrides = {"max_steps": "6", "batch_size": "2", "save_steps": "100", "logging_steps": "1", "warmup": "0",
                 "encode_workers": "2", "plateau_step": "3", "plateau_window": "3", "plateau_loss": "0",
                 "plateau_retries": "1"}  # plateau_loss 0: every guarded try is stopped
    out = tmp_path / "out"
    record = tiny_recipe(TrainRequest(recipe="tiny", recipe_version="1", output=out, data=files,
                                      overrides=overrides, progress=False))
    err = capfd.readouterr().err
    assert "tiny: seed 0: the mean loss over steps 1-3 was" in err and "seed=N" not in err
    assert "starting over with seed 1 (try 2 of 2)" in err
    # try 2's base has other weights but the same tokenizer and processor: try 1's encoded items are kept
    assert err.count("tiny: encoding 24 items in 2 processes") == 1  # (6 steps of 2 x 2 workers >= 24: ahead)
    assert "tiny: 24 of 24 items already encoded by the stopped try" in err
    assert record["hyperparameters"]["seed"] == 1 and record["hyperparameters"]["plateau_step"] == 0
    assert record["steps"] == 6  # the last try trains to the end
    restarts = record["plateau_restarts"]
    assert restarts["seeds"] == [0] and restarts["stopped"][0]["stopped_at_step"] == 3
    assert restarts["stopped"][0]["mean_loss"] > 0
    on_disk = lineage(out)  # the file keeps its format version beside what the recipe returned
    assert on_disk["version"] == 1 and {k: v for k, v in on_disk.items() if k != "version"} == record
    assert _try_in_folder(out, [0, 1]) == 1 and _try_in_folder(out, [5, 6]) == 0
    again = tiny_recipe(TrainRequest(recipe="tiny", recipe_version="1", output=out, data=files,
                                     overrides=overrides, progress=False))
    assert again == on_disk and "nothing to train" in capfd.readouterr().err  # the finished folder is recognised


def test_without_the_plateau_check_a_plan_has_the_layout_of_one_written_before_it_existed(tmp_path: Path) -> None:
    """An unfinished run started by an earlier version resumes: its plan has no plateau keys."""
    from types import SimpleNamespace

    from medmim_eval.training_recipes.sft import plan_of

    request = TrainRequest(recipe="sft-llava", recipe_version="1", output=tmp_path / "out")
    data = SimpleNamespace(files=[{"path": "a.json", "sha256": "0"}])
    plain = plan_of(request, "llava", "fmt", build_config({}), data, tmp_path)
    assert not [key for key in plain["hyperparameters"] if key.startswith("plateau")]
    guarded = plan_of(request, "llava", "fmt", build_config({"plateau_step": "10"}), data, tmp_path)
    assert guarded["hyperparameters"]["plateau_step"] == 10 and guarded["hyperparameters"]["plateau_retries"] == 0


def test_a_moved_folder_resumes_but_other_contents_are_refused(tmp_path: Path) -> None:
    """Plans compare the data by hash and the base by its digest, not by path (a moved cache folder)."""
    from medmim_eval.training_recipes import run_dir

    def plan(root: str, digest: str | None = "d1", sha: str = "s1") -> dict[str, Any]:
        out: dict[str, Any] = {"recipe": "tiny", "hyperparameters": {"lr": 0.1}, "base": f"{root}/base",
                               "data": {f"{root}/synth/temporal.json": sha, f"{root}/synth/reasoning.json": "s2"}}
        if digest is not None:
            out["base_digest"] = digest
        return out

    def folder(written: dict[str, Any]) -> Path:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        (out / "checkpoint-10").mkdir(parents=True)
        (out / "checkpoint-10" / "trainer_state.json").write_text("{}")
        (out / run_dir.PLAN).write_text(json.dumps({"plan": written, "resumes": []}))
        return out

    moved = folder(plan("/old"))
    assert run_dir.prepare_folder(moved, plan("/new"), False, True) == (moved / "checkpoint-10", False)
    with pytest.raises(MedmimError, match=r"base_digest: 'd1' -> 'd2'.*--restart to start over \(medmim-eval demo: --retrain\)"):
        run_dir.prepare_folder(folder(plan("/old")), plan("/old", digest="d2"), False, True)
    with pytest.raises(MedmimError, match=r"data: \['temporal.json s1', 'reasoning.json s2'\] -> \['temporal.json s9'"):
        run_dir.prepare_folder(folder(plan("/old")), plan("/new", sha="s9"), False, True)
    # A plan written before base_digest existed has only the base's path to go by.
    old_layout = folder(plan("/old", digest=None))
    assert run_dir.prepare_folder(old_layout, plan("/old"), False, True)[0] == old_layout / "checkpoint-10"
    with pytest.raises(MedmimError, match="base: '/old/base' -> '/new/base'"):
        run_dir.prepare_folder(folder(plan("/old", digest=None)), plan("/new"), False, True)

