"""``medmim-eval demo``: synthetic data -> tiny model trained by the ``tiny`` recipe (cached) ->
evaluation beside the baselines -> leaderboard and margins."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
from conftest import run_cli
from tiny_models import cache_root

pytest.importorskip("torch")
pytest.importorskip("accelerate")

TASKS = {"synth-temporal", "synth-reasoning", "synth-comparison", "synth-coreference"}
ROOT = Path(__file__).resolve().parents[1]
# Everything a trained demo model depends on besides what the recipe's own model key names: the
# training and task code, the core modules that shape its inputs, and the libraries that train it.
TRAINING_SOURCES = ("training_recipes", "tasks", "medmim_eval/prompt_formats.py", "medmim_eval/images.py",
                    "medmim_eval/model_inputs.py", "medmim_eval/recipes_api.py", "medmim_eval/cli/demo_cmd.py")
TRAINING_PACKAGES = ("torch", "transformers", "accelerate", "tokenizers", "numpy", "pillow")


def margins(run: Path) -> list[dict]:
    return json.loads((run / "demo_margins.json").read_text())["margins"]


@pytest.mark.slow
def test_demo_trains_once_and_a_second_run_reuses_the_cached_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ("demo", "--train-option", "max_steps=3", "--limit", "2", "--max-new-tokens", "8", "--output", str(run))
    cold = run_cli(*args, timeout=1200)
    assert cold.returncode == 0, cold.stderr[-3000:]
    assert "training (recipe tiny)" in cold.stderr and "3 steps" in cold.stderr
    rows = margins(run)
    assert {(r["task"], r["kind"]) for r in rows} == {(t, k) for t in TASKS for k in ("closed", "open")}
    assert all(r["best_baseline"] in ("random", "majority") for r in rows)
    assert "tiny-medmim" in cold.stdout and "majority" in cold.stdout
    model = Path(json.loads((run / "demo_margins.json").read_text())["model"])
    finished = json.loads((model / "medmim_lineage.json").read_text())["finished_at"]
    warm = run_cli(*args, timeout=1200)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert f"cached at {model}" in warm.stderr and "training (recipe tiny)" not in warm.stderr
    assert json.loads((model / "medmim_lineage.json").read_text())["finished_at"] == finished
    assert "0 computed" in warm.stderr and "already done" in warm.stderr  # the finished run is reused
    # A cache folder that has moved (another $MEDMIM_CACHE_DIR, a copied home) still serves the model:
    # its key names contents, not paths.
    moved = tmp_path / "moved-cache"
    shutil.copytree(Path(os.environ["MEDMIM_CACHE_DIR"]), moved)
    again = run_cli(*args[:-1], str(tmp_path / "run-moved"), env={"MEDMIM_CACHE_DIR": str(moved)}, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"cached at {moved / 'demo' / model.name}" in again.stderr and "training (recipe" not in again.stderr


def training_digest(root: Path = ROOT) -> str:
    """A digest of every source file and library version that can change the trained demo model."""
    digest = hashlib.sha256()
    for name in TRAINING_SOURCES:
        path = root / name
        for file in sorted([path] if path.is_file() else path.rglob("*.py")):
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    for package in TRAINING_PACKAGES:
        digest.update(f"{package}=={metadata.version(package)}\0".encode())
    return digest.hexdigest()[:16]


def trained_model_store() -> Path:
    """Where a demo model trained by this suite is kept for the next session, under the digest of
    what it was trained with (beside the tiny test checkpoints)."""
    return cache_root() / "demo-model" / training_digest()


def reuse_stored_model(store: Path, cache: Path) -> str | None:
    """Put the model stored in ``store`` (trained by this very code and these libraries) into the
    test's empty cache, where ``demo`` finds it if its model key still matches; its name, or None."""
    stored = [d for d in store.iterdir() if (d / "medmim_lineage.json").is_file()] if store.is_dir() else []
    if not stored:
        return None
    shutil.copytree(stored[0], cache / "demo" / stored[0].name)
    return stored[0].name


KEPT_STORES = 3  # two virtualenvs on one machine (an editable checkout's, CI's fresh one) often differ in a library


def store_trained_model(store: Path, model: Path) -> None:
    """Keep ``model`` in ``store`` (atomically) and drop all but the newest stores of other digests."""
    store.parent.mkdir(parents=True, exist_ok=True)
    others = sorted((d for d in store.parent.iterdir() if d.name != store.name and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for old in others[KEPT_STORES - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=store.parent))
    shutil.copytree(model, tmp / model.name)
    shutil.rmtree(store, ignore_errors=True)
    os.replace(tmp, store)


def test_the_training_digest_follows_the_training_code(tmp_path: Path) -> None:
    """A change to any training source gives another digest, so a stored model is never reused for it."""
    for name in TRAINING_SOURCES:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, target)
        else:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    assert training_digest(tmp_path) == training_digest()
    trainer = tmp_path / "training_recipes" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n# changed\n")
    assert training_digest(tmp_path) != training_digest()


def test_the_store_keeps_the_newest_models_of_other_digests(tmp_path: Path) -> None:
    """An editable checkout's virtualenv and CI's fresh one may differ in a library version: each
    stores its model, and neither throws the other's away (up to KEPT_STORES digests)."""
    root = tmp_path / "demo-model"
    for age, name in enumerate(["d1", "d2", "d3"]):
        (root / name / "m").mkdir(parents=True)
        os.utime(root / name, (1000 + age, 1000 + age))
    model = tmp_path / "model"
    (model / "medmim_lineage.json").parent.mkdir()
    (model / "medmim_lineage.json").write_text("{}")
    store_trained_model(root / "d4", model)
    assert sorted(d.name for d in root.iterdir()) == ["d2", "d3", "d4"]  # KEPT_STORES = 3: d1, the oldest, goes
    assert reuse_stored_model(root / "d4", tmp_path / "cache") == "model"


@pytest.mark.slow
def test_the_demo_model_beats_the_baselines_on_every_ability(tmp_path: Path) -> None:
    """The README's main command with its default settings (minutes on a laptop CPU).

    The model is trained by the recipe the first time this code and these libraries meet (the
    stored copy is keyed by the digest of every training source and library version, and ``demo``
    itself checks the recipe's model key); later sessions reuse it and evaluate it afresh (new data
    folder, no response cache), so the check stays whole while the suite skips the repeat training."""
    run = tmp_path / "run"
    store = trained_model_store()
    reused = reuse_stored_model(store, Path(os.environ["MEDMIM_CACHE_DIR"]))
    result = run_cli("demo", "--output", str(run), timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    model = Path(json.loads((run / "demo_margins.json").read_text())["model"])
    trained = "training (recipe tiny)" in result.stderr
    assert trained == (reused != model.name), result.stderr[-3000:]  # a stored model is used exactly when it fits
    assert "0 from cache" in result.stderr  # evaluated afresh, whatever the model's origin
    closed = {r["task"]: r["margin"] for r in margins(run) if r["kind"] == "closed"}
    assert set(closed) == TASKS
    # A model that has not learned to read the images sits at the baselines' level. The seeds that
    # found them gave margins of at least +25.8 (README); one in eight never did, and the recipe's
    # plateau check starts such a run over from the next seed. 20 leaves room for the machine-to-machine
    # differences of a model trained from scratch (a longer schedule left one seed at +17.5).
    assert all(margin >= 20.0 for margin in closed.values()), closed
    assert "does not beat" not in result.stderr
    if trained:
        store_trained_model(store, model)
