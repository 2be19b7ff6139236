"""The optional LLM judge (``run --extractor llm=openai:MODEL``) against real HTTP servers on 127.0.0.1.

One fake server plays the evaluated model (its replies are scripted by ``[[answer=...]]`` in each
question), a second one plays the judge (scripted by ``rules`` keyed on the quoted reply). The judge
is asked only where rule v3 says unparseable; its verdicts, the cache, the footers, ``compare``
and the key's absence from every output file are checked on what the runs wrote.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from conftest import run_cli
from fake_openai_server import FakeOpenAIServer
from PIL import Image

from medmim_eval.extract_judge import JUDGE_PROMPT_VERSION, judge_prompt, parse_extractor, read_verdict
from medmim_eval.errors import MedmimError
from medmim_eval.schema import UNPARSEABLE

JUDGE_KEY = "sk-judge-DoNotLeak-90c1f4aa73e2b5d8"
OPTIONS = {"A": "yes", "B": "no"}
# (reply of the evaluated model, gold letter, what the judge server answers for it: markers or None)
CASES = {
    "clear": ("A", "A", None),  # the rule decides: the judge is never asked
    "decided": ("It is the affirmative one (zq1)", "A", "[[answer=A]]"),
    "none": ("Hard to say (zq2)", "A", "[[answer=none]]"),
    "garbage": ("Something odd (zq3)", "B", "[[answer=I think it is B because]]"),
    "not-an-option": ("Unclear (zq4)", "B", "[[answer=C]]"),
    "fails-once": ("Perhaps not (zq5)", "B", "[[answer=B]][[fault=401*1]]"),  # 401 echoes the key
}


def _task(folder: Path, source: str = "T") -> Path:
    Image.new("L", (8, 8), 40).save(folder / "a.png")
    Image.new("L", (8, 8), 220).save(folder / "b.png")
    items = [{"id": name, "images": ["a.png", "b.png"], "source": source, "conversation": [
        {"role": "user", "content": f"<image><image>Is the opacity there? ({name}) [[answer={reply}]]\nA: yes\nB: no\n"},
        {"role": "assistant", "content": f"{gold}: {OPTIONS[gold]}"}]} for name, (reply, gold, _) in CASES.items()]
    path = folder / "task.json"
    path.write_text(json.dumps(items))
    return path


@dataclass
class Servers:
    model: FakeOpenAIServer
    judge: FakeOpenAIServer
    task: Path
    root: Path
    env: dict[str, str]

    def extractor(self, **extra: str) -> str:
        options = {"base_url": self.judge.url, "api_key_env": "JUDGE_KEY", "max_retries": "0", **extra}
        return "llm=openai:judge-model," + ",".join(f"{k}={v}" for k, v in options.items())

    def run(self, out: Path, *extra: str):  # type: ignore[no-untyped-def]
        return run_cli("run", "--models", f"openai:test-model,base_url={self.model.url}", "--tasks", str(self.task),
                       "--output", str(out), *extra, env=self.env)

    def judge_requests(self) -> list[dict]:
        return [r for r in self.judge.chat_requests() if r.get("model") == "judge-model"]


@dataclass
class Snapshot:
    """What one run left behind, copied when it finished (later runs append to the same folders)."""

    out: Path
    returncode: int
    stdout: str
    stderr: str
    records: dict[str, dict]
    judge_requests: list[dict]


def _snapshot(servers: Servers, out: Path, result, before: int) -> Snapshot:  # type: ignore[no-untyped-def]
    latest: dict[str, dict] = {}
    for line in (out / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        latest[record["item_id"]] = record
    return Snapshot(out, result.returncode, result.stdout, result.stderr, latest, servers.judge_requests()[before:])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("judge")
    rules = tuple((CASES[name][0], markers) for name in CASES if (markers := CASES[name][2]))
    env = {"MEDMIM_CACHE_DIR": str(root / "cache"), "JUDGE_KEY": JUDGE_KEY, "HF_HUB_OFFLINE": "1"}
    with FakeOpenAIServer() as model, FakeOpenAIServer(models=("judge-model",), rules=rules) as judge:
        yield Servers(model, judge, _task(root), root, env)


@pytest.fixture(scope="module")
def first(servers: Servers) -> Snapshot:
    out = servers.root / "judged"
    result = servers.run(out, "--extractor", servers.extractor())
    return _snapshot(servers, out, result, 0)


@pytest.fixture(scope="module")
def rerun(servers: Servers, first: Snapshot) -> Snapshot:
    """The same command again, into the same folder: only the failed judge request is asked again."""
    before = len(servers.judge_requests())
    result = servers.run(first.out, "--extractor", servers.extractor())
    return _snapshot(servers, first.out, result, before)


@pytest.fixture(scope="module")
def fresh(servers: Servers, rerun: Snapshot) -> Snapshot:
    """The same judged run into a new folder: model answers and judge answers come from the cache."""
    before = len(servers.judge_requests())
    out = servers.root / "judged-again"
    result = servers.run(out, "--extractor", servers.extractor())
    return _snapshot(servers, out, result, before)


# --- the judge's prompt and what it accepts ------------------------------------------------------

def test_prompt_lists_options_gives_reply_and_asks_for_one_letter_or_none() -> None:
    prompt = judge_prompt({"A": "stable", "B": "progressive", "C": "resolved"}, "  it got worse  ")
    assert "A: stable\nB: progressive\nC: resolved" in prompt
    assert "<<<\nit got worse\n>>>" in prompt
    assert "Write only one of A, B, C or none, nothing else." in prompt


@pytest.mark.parametrize("reply, outcome, letter", [
    ("B", "decided", "B"), (" B\n", "decided", "B"), ("none", "none", None), ("None", "none", None),
    ("B.", "invalid", None), ("(B)", "invalid", None), ("b", "invalid", None), ("A or B", "invalid", None),
    ("The answer is B", "invalid", None), ("C", "invalid", None), ("", "invalid", None),
])
def test_only_a_single_option_letter_or_none_is_accepted(reply: str, outcome: str, letter: str | None) -> None:
    got, answer, reason = read_verdict(reply, OPTIONS)
    assert (got, answer) == (outcome, letter)
    assert reason


@pytest.mark.parametrize("text", ["llm", "llm=", "judge=openai:x", "llm=random", "llm=openai", "llm=openai:a,openai:b"])
def test_malformed_extractor_is_refused(text: str) -> None:
    with pytest.raises(MedmimError, match="--extractor"):
        parse_extractor(text)


def test_rule_alone_is_the_default() -> None:
    assert parse_extractor("rule") is None and parse_extractor(None) is None


# --- a judged run ---------------------------------------------------------------------------------

def test_judge_is_asked_only_where_the_rule_says_unparseable(first: Snapshot) -> None:
    assert first.returncode == 0, first.stderr
    clear = first.records["clear"]
    assert clear["extracted"] == "A" and clear["judge"] is None
    asked = {name for name, r in first.records.items() if r["judge"] is not None}
    assert asked == set(CASES) - {"clear"}
    for name in asked:  # the rule's own decision is kept beside the judge's
        assert first.records[name]["extraction"]["rule_version"] == "3"
    assert len(first.judge_requests) == len(asked)
    for request in first.judge_requests:
        prompt = "".join(request["texts"])
        assert "A: yes\nB: no" in prompt and "opacity" not in prompt  # options and reply, never the question
        assert request["settings"]["max_tokens"] == 8 and request["settings"]["temperature"] == 0


def test_each_judge_outcome_is_recorded_and_scored(first: Snapshot) -> None:
    records = first.records
    decided = records["decided"]
    assert decided["judge"]["outcome"] == "decided" and decided["judge"]["answer"] == "A"
    assert decided["extracted"] == "A" and decided["correct"] is True
    assert decided["extraction"]["rule"] == "option text unclear"
    assert records["none"]["judge"]["outcome"] == "none" and records["none"]["extracted"] == UNPARSEABLE
    for name in ("garbage", "not-an-option"):
        judge = records[name]["judge"]
        assert judge["outcome"] == "invalid" and records[name]["extracted"] == UNPARSEABLE
        assert judge["reply"] in judge["reason"] and records[name]["error"] is None and records[name]["correct"] is False
    failed = records["fails-once"]
    assert failed["error"] is None and failed["extracted"] == UNPARSEABLE and failed["output"] == CASES["fails-once"][0]
    assert failed["judge"]["outcome"] == "failed" and "RequestRejected" in failed["judge"]["reason"]
    assert "rerun" in first.stderr


def test_manifest_and_results_record_the_judge(first: Snapshot, servers: Servers) -> None:
    for name in ("manifest.json", "results.json"):
        metrics = json.loads((first.out / name).read_text())["metrics"]
        judge = metrics["extraction_judge"]
        assert (judge["adapter"], judge["model"], judge["prompt_version"]) == ("openai", "judge-model", JUDGE_PROMPT_VERSION)
        assert judge["endpoint"]["base_url"] == servers.judge.url
    cell = json.loads((first.out / "results.json").read_text())["cells"][0]
    assert (cell["judge_asked"], cell["judged"], cell["judge_failed"]) == (5, 1, 1)
    assert cell["unparseable_rate"] == pytest.approx(4 / 6)


def test_the_key_reaches_the_judge_but_no_output_file(fresh: Snapshot, servers: Servers) -> None:
    assert any(r["auth"] == f"Bearer {JUDGE_KEY}" for r in servers.judge_requests())
    leaks = []
    for folder in (servers.root / "judged", fresh.out, servers.root / "cache"):
        for path in folder.rglob("*"):
            if path.is_file() and JUDGE_KEY.encode() in path.read_bytes():
                leaks.append(path)
    assert not leaks
    assert JUDGE_KEY not in fresh.stdout + fresh.stderr


def test_rerun_asks_again_only_where_the_judge_request_failed(rerun: Snapshot) -> None:
    assert rerun.returncode == 0, rerun.stderr
    assert len(rerun.judge_requests) == 1 and "zq5" in "".join(rerun.judge_requests[0]["texts"])
    retried = rerun.records["fails-once"]
    assert retried["judge"]["outcome"] == "decided" and retried["extracted"] == "B" and retried["correct"] is True


def test_a_new_run_takes_every_judge_answer_from_the_cache(fresh: Snapshot, rerun: Snapshot) -> None:
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.judge_requests == []
    judged = {name: r["judge"] for name, r in fresh.records.items() if r["judge"] is not None}
    assert len(judged) == 5 and all(j["cached"] for j in judged.values())
    assert {n: (j["outcome"], j["answer"]) for n, j in judged.items()} == \
        {n: (r["judge"]["outcome"], r["judge"]["answer"]) for n, r in rerun.records.items() if r["judge"]}


# --- views ----------------------------------------------------------------------------------------

def test_every_leaderboard_view_says_how_many_answers_the_judge_decided(fresh: Snapshot, tmp_path: Path) -> None:
    expected = "judge decided 2 of 5 answer(s) the rule left unparseable"
    result = run_cli("leaderboard", str(fresh.out))
    assert result.returncode == 0, result.stderr
    assert "LLM judge openai:judge-model (prompt v1" in result.stdout and expected in result.stdout
    for fmt in ("markdown", "latex", "html", "json"):
        result = run_cli("leaderboard", str(fresh.out), "--format", fmt, "--output", str(tmp_path / f"out.{fmt}"))
        assert result.returncode == 0, result.stderr
        assert expected in (tmp_path / f"out.{fmt}").read_text(), fmt
    csv = run_cli("leaderboard", str(fresh.out), "--format", "csv").stdout.splitlines()
    row = dict(zip(csv[0].split(","), csv[1].split(",")))
    assert row["judged"] == "2"


def test_compare_refuses_to_mix_a_judged_and_an_unjudged_run(fresh: Snapshot, servers: Servers) -> None:
    plain = servers.root / "plain"
    result = servers.run(plain)  # the model's answers come from the cache; no judge
    assert result.returncode == 0, result.stderr
    assert "extraction_judge" not in json.loads((plain / "manifest.json").read_text())["metrics"]
    refused = run_cli("compare", str(plain), str(fresh.out))
    assert refused.returncode == 2
    assert "not comparable (metric-definitions)" in refused.stderr and "extraction_judge" in refused.stderr


def test_compare_of_two_judged_runs_says_what_the_judge_decided(fresh: Snapshot, rerun: Snapshot) -> None:
    result = run_cli("compare", str(rerun.out), str(fresh.out), "--markdown")
    assert result.returncode == 0, result.stderr
    assert "baseline: the extraction judge openai:judge-model (prompt v1) decided 2 of 5" in result.stdout
    assert "candidate: the extraction judge openai:judge-model (prompt v1) decided 2 of 5" in result.stdout


def test_the_same_judge_at_another_address_still_compares(fresh: Snapshot, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(fresh.out, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["metrics"]["extraction_judge"]["endpoint"]["base_url"] = "http://127.0.0.1:8001/v1"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("compare", str(fresh.out), str(moved), "--json")
    assert result.returncode == 0, result.stderr
    assert any("the extraction judge's endpoint differs" in note for note in json.loads(result.stdout)["notes"])


def test_explain_shows_the_rule_and_the_judge(fresh: Snapshot) -> None:
    key = fresh.records["garbage"]["key"]
    result = run_cli("explain", str(fresh.out), "--sample", key)
    assert result.returncode == 0, result.stderr
    assert "decided by: option text unclear (rule v3)" in result.stdout
    assert "judge:     openai:judge-model (prompt v1, from cache): invalid" in result.stdout
    assert "judge reply: 'I think it is B because'" in result.stdout


# --- refusals, before any model is called -----------------------------------------------------------

def test_resuming_a_judged_run_without_the_judge_is_refused(fresh: Snapshot, servers: Servers) -> None:
    before = len(servers.model.chat_requests())
    result = servers.run(fresh.out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "extraction judge openai:judge-model prompt v1 vs none (rule only)" in result.stderr
    assert len(servers.model.chat_requests()) == before


def test_an_unreachable_judge_fails_before_any_model_is_called(servers: Servers, tmp_path: Path) -> None:
    before = len(servers.model.chat_requests())
    result = servers.run(tmp_path / "out", "--extractor", "llm=openai:judge-model,base_url=http://127.0.0.1:9/v1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "127.0.0.1:9" in result.stderr
    assert len(servers.model.chat_requests()) == before
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_a_key_in_the_judge_spec_is_refused(servers: Servers, tmp_path: Path) -> None:
    result = servers.run(tmp_path / "out", "--extractor", servers.extractor(api_key=JUDGE_KEY))
    assert result.returncode == 2 and "never put the API key" in result.stderr
    assert not (tmp_path / "out").exists() or JUDGE_KEY not in "".join(
        p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())



def test_credentialed_replies_are_not_sent_to_a_remote_judge(servers: Servers, tmp_path: Path) -> None:
    task = _task(tmp_path, source="EMBED_multichoice_x")
    before = len(servers.model.chat_requests())
    result = run_cli("run", "--models", f"openai:test-model,base_url={servers.model.url}", "--tasks", str(task),
                     "--output", str(tmp_path / "out"), "--extractor", "llm=openai:judge-model,base_url=http://192.0.2.1/v1",
                     env=servers.env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "refusing to send replies and options of EMBED" in result.stderr and "192.0.2.1" in result.stderr
    assert len(servers.model.chat_requests()) == before


# --- rescore with the judge (medmim-eval rescore --extractor llm=...) --------------------------------

def _records_by_item(out: Path) -> dict[str, dict]:
    return {r["item_id"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_rescoring_an_unjudged_run_with_the_judge_matches_the_judged_run(fresh: Snapshot, servers: Servers,
                                                                         tmp_path: Path) -> None:
    plain = servers.root / "plain-to-rescore"
    assert servers.run(plain).returncode == 0
    out = tmp_path / "rescored"
    result = run_cli("rescore", str(plain), "--extractor", servers.extractor(), "-o", str(out), "-q", env=servers.env)
    assert result.returncode == 0, result.stderr
    verdicts = {name: (r["extracted"], (r["judge"] or {}).get("outcome")) for name, r in _records_by_item(out).items()}
    assert verdicts == {name: (r["extracted"], (r["judge"] or {}).get("outcome")) for name, r in fresh.records.items()}
    assert json.loads((out / "manifest.json").read_text())["metrics"]["extraction_judge"]["model"] == "judge-model"
    assert run_cli("compare", str(fresh.out), str(out)).returncode == 0  # the same definitions: comparable


def test_rescoring_a_judged_run_with_its_judge_keeps_the_verdicts_without_asking(fresh: Snapshot, servers: Servers,
                                                                                 tmp_path: Path) -> None:
    before = len(servers.judge_requests())
    out = tmp_path / "rescored"
    result = run_cli("rescore", str(fresh.out), "--extractor", servers.extractor(), "--no-cache", "-o", str(out), "-q",
                     env=servers.env)
    assert result.returncode == 0, result.stderr
    assert len(servers.judge_requests()) == before
    assert _records_by_item(out) == fresh.records
    rule_only = run_cli("rescore", str(fresh.out), "-o", str(tmp_path / "rule-only"), "-q", env=servers.env)
    assert rule_only.returncode == 0 and "uses the rule alone" in rule_only.stderr
    assert all(r["judge"] is None for r in _records_by_item(tmp_path / "rule-only").values())
