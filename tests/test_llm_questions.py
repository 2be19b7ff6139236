"""LLM question writing against a real chat-completions HTTP server on 127.0.0.1, and the review queue."""
from __future__ import annotations

import csv
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import run_cli
from test_builders_instruction import folder_text, make_llava_med, make_ms_cxr_t

SECRET = "sk-test-DO-NOT-LEAK-9f8e7d"
BAD_JSON = "Sure! Here is the question {not json at all"


class ChatServer:
    """A chat-completions endpoint whose replies come from ``policy(messages) -> content``."""

    def __init__(self, policy: Callable[[list[dict[str, str]]], str]) -> None:
        self.policy = policy
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "agent": self.headers.get("User-Agent", ""), "body": body})
                content = server.policy(body["messages"])
                payload = json.dumps({
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def template_fields(messages: list[dict[str, str]]) -> dict[str, str]:
    """The template question/answer the builder put into the first user message."""
    user = messages[1]["content"]
    fields = {}
    for name, label in (("question", r"(?:Current|Template) question"), ("answer", "Template answer")):
        match = re.search(rf"^{label}: (.*)$", user, re.M)
        if match:
            fields[name] = match.group(1)
    return fields


def good_reply(messages: list[dict[str, str]]) -> str:
    fields = template_fields(messages)
    reply = {"question": "LLM asks: " + fields["question"]}
    if "answer" in fields:
        reply["answer"] = fields["answer"]
    return json.dumps(reply)


@pytest.fixture
def chat_server() -> Iterator[Callable[[Callable[[list[dict[str, str]]], str]], ChatServer]]:
    servers: list[ChatServer] = []

    def start(policy: Callable[[list[dict[str, str]]], str]) -> ChatServer:
        servers.append(ChatServer(policy))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def build_with_llm(source: Path, out: Path, server: ChatServer, *options: str, name: str = "composed"):  # type: ignore[no-untyped-def]
    args = ["--option", f"llm_base_url={server.url},llm_model=tiny-writer"]
    for option in options:
        args += ["--option", option]
    return run_cli("data", "build", name, "--source", str(source), "--out", str(out), *args,
                   env={"OPENAI_API_KEY": SECRET})


def questions(out: Path, stem: str = "composed_coreference") -> list[str]:
    return [i["conversation"][0]["content"] for i in json.loads((out / f"{stem}.json").read_text())]


@pytest.mark.parametrize("client", ["http", "openai"])
def test_valid_llm_answers_are_used_queued_for_review_and_the_key_stays_out(tmp_path: Path, chat_server, client: str) -> None:
    if client == "openai":
        pytest.importorskip("openai")
    server = chat_server(good_reply)
    raw = make_llava_med(tmp_path / "raw").parent
    result = build_with_llm(raw, tmp_path / "out", server, f"llm_client={client}")
    assert result.returncode == 0, result.stderr
    assert all("LLM asks: " in q for q in questions(tmp_path / "out"))
    assert {r["auth"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert all(r["path"] == "/v1/chat/completions" and r["body"]["model"] == "tiny-writer" for r in server.requests)
    assert all(("urllib" in r["agent"]) == (client == "http") for r in server.requests)
    queue = list(csv.DictReader(open(tmp_path / "out" / "review_queue.csv", encoding="utf-8")))
    assert len(queue) == 3 and {row["origin"] for row in queue} == {"llm:tiny-writer"}
    assert SECRET.encode() not in folder_text(tmp_path / "out")
    assert SECRET not in result.stdout + result.stderr


def test_invalid_json_is_retried_and_never_written(tmp_path: Path, chat_server) -> None:
    server = chat_server(lambda m: BAD_JSON if len(m) == 2 else good_reply(m))
    raw = make_llava_med(tmp_path / "raw").parent
    result = build_with_llm(raw, tmp_path / "out", server)
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 6  # three items, each answered twice
    retry = server.requests[-1]["body"]["messages"]
    assert retry[2] == {"role": "assistant", "content": BAD_JSON} and "not valid" in retry[3]["content"]
    assert all("LLM asks: " in q for q in questions(tmp_path / "out"))
    assert b"not json at all" not in folder_text(tmp_path / "out")


def test_answers_still_invalid_after_the_attempts_are_rejected(tmp_path: Path, chat_server) -> None:
    def policy(messages: list[dict[str, str]]) -> str:
        fields = template_fields(messages)
        if "scan 4" in fields["question"]:  # an answer that drops the gold fact and adds a token
            return json.dumps({"question": "Which <image> is it?", "answer": "Nothing to see."})
        return good_reply(messages)

    server = chat_server(policy)
    raw = make_llava_med(tmp_path / "raw").parent
    result = build_with_llm(raw, tmp_path / "out", server, "llm_attempts=2")
    assert result.returncode == 0, result.stderr
    kept = questions(tmp_path / "out")
    assert len(kept) == 2 and not any("scan 4" in q for q in kept)
    assert sum("scan 4" in template_fields(r["body"]["messages"])["question"] for r in server.requests) == 2
    assert b"Nothing to see" not in folder_text(tmp_path / "out")
    assert "1 items rejected after 2 invalid answers" in (tmp_path / "out" / "DATASET_CARD.md").read_text()


def test_the_cache_avoids_a_second_request(tmp_path: Path, chat_server) -> None:
    server = chat_server(good_reply)
    raw = make_llava_med(tmp_path / "raw").parent
    assert build_with_llm(raw, tmp_path / "out", server).returncode == 0
    first = (tmp_path / "out" / "composed_coreference.json").read_text()
    sent = len(server.requests)
    assert sent == 3
    rebuilt = build_with_llm(raw, tmp_path / "out", server)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len(server.requests) == sent
    assert (tmp_path / "out" / "composed_coreference.json").read_text() == first
    assert "0 requests, 3 cached answers" in (tmp_path / "out" / "DATASET_CARD.md").read_text()
    shared = tmp_path / "shared-cache"
    assert build_with_llm(raw, tmp_path / "a", server, f"llm_cache={shared}").returncode == 0
    assert build_with_llm(raw, tmp_path / "b", server, f"llm_cache={shared}").returncode == 0
    assert len(server.requests) == sent + 3


def test_closed_items_keep_their_options_and_gold(tmp_path: Path, chat_server) -> None:
    server = chat_server(good_reply)
    raw = make_ms_cxr_t(tmp_path / "raw")
    plain = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    result = build_with_llm(raw, tmp_path / "out", server, name="ms-cxr-t")
    assert result.returncode == 0, result.stderr
    before = json.loads((tmp_path / "plain" / "ms_cxr_t_comparison.json").read_text())
    after = json.loads((tmp_path / "out" / "ms_cxr_t_comparison.json").read_text())
    for old, new in zip(before, after):
        old_user, new_user = old["conversation"][0]["content"], new["conversation"][0]["content"]
        assert new_user.startswith("<image><image>LLM asks: ")
        if "\nA: " in old_user:
            assert new_user.split("\nA: ", 1)[1] == old_user.split("\nA: ", 1)[1]
            assert new["conversation"][1] == old["conversation"][1]
    closed_facts = [re.search(r"^Facts about the images: (.*)$", r["body"]["messages"][1]["content"], re.M).group(1)
                    for r in server.requests if "Options (fixed)" in r["body"]["messages"][1]["content"]]
    assert len(closed_facts) == 5 and not any(label in facts for facts in closed_facts
                                              for label in ("improving", "stable", "worsening"))


@pytest.mark.parametrize("client", ["http", "openai"])
def test_an_unreachable_endpoint_stops_the_build_without_output(tmp_path: Path, client: str) -> None:
    if client == "openai":
        pytest.importorskip("openai")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    raw = make_llava_med(tmp_path / "raw").parent
    result = run_cli("data", "build", "composed", "--source", str(raw), "--out", str(tmp_path / "out"),
                     "--option", f"llm_base_url=http://127.0.0.1:{port}/v1,llm_model=m,llm_client={client}",
                     env={"OPENAI_API_KEY": SECRET})
    assert result.returncode != 0
    assert "LLM endpoint 127.0.0.1 failed" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_credentialed_text_is_not_sent_to_a_remote_endpoint(tmp_path: Path) -> None:
    raw = make_ms_cxr_t(tmp_path / "raw")
    result = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out"),
                     "--option", "llm=openai:gpt-4o", env={"OPENAI_API_KEY": SECRET})
    assert result.returncode != 0
    assert "refusing to send MS-CXR-T / MIMIC-CXR label text to api.openai.com" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_api_key_given_as_an_option_is_refused(tmp_path: Path) -> None:
    raw = make_llava_med(tmp_path / "raw").parent
    result = run_cli("data", "build", "composed", "--source", str(raw), "--out", str(tmp_path / "out"),
                     "--option", f"llm=openai:m,base_url=http://127.0.0.1:9/v1,api_key={SECRET}")
    assert result.returncode != 0 and "never pass an API key as an option" in result.stderr
    assert SECRET not in result.stderr + result.stdout


# --------------------------------------------------------------------------- review queue
def _decide(queue: Path, decisions: Path, choices: dict[int, dict[str, str]]) -> list[dict[str, str]]:
    rows = list(csv.DictReader(open(queue, encoding="utf-8")))
    for index, change in choices.items():
        rows[index].update(change)
    with open(decisions, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_review_decisions_drop_rejected_items_and_use_edits(tmp_path: Path) -> None:
    raw = make_ms_cxr_t(tmp_path / "raw")
    first = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out"),
                    "--option", "review_export=csv")
    assert first.returncode == 0, first.stderr
    rows = _decide(tmp_path / "out" / "review_queue.csv", tmp_path / "decisions.csv", {
        0: {"decision": "reject"},
        1: {"decision": "edit", "edited_question": "How did the consolidation evolve between the two films?",
            "edited_answer": "It became worse."},
        2: {"decision": "edit", "edited_answer": "A"},
        3: {"decision": "accept"}})
    rebuilt = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out2"),
                      "--option", f"review={tmp_path / 'decisions.csv'}")
    assert rebuilt.returncode == 0, rebuilt.stderr
    items = {(i["id"], "\nA: " in i["conversation"][0]["content"]): i
             for i in json.loads((tmp_path / "out2" / "ms_cxr_t_comparison.json").read_text())}
    key = lambda row: (row["item_id"], row["kind"] == "closed")  # noqa: E731
    assert key(rows[0]) not in items
    edited = items[key(rows[1])]
    assert edited["conversation"][0]["content"].endswith("between the two films?")
    assert edited["conversation"][1]["content"] == "It became worse."
    assert items[key(rows[2])]["conversation"][1]["content"].startswith("A: ")
    assert len(items) == len(rows) - 1
    assert "1 accepted, 2 edited, 1 rejected" in (tmp_path / "out2" / "DATASET_CARD.md").read_text()


def test_a_stale_decision_is_not_applied(tmp_path: Path) -> None:
    raw = make_ms_cxr_t(tmp_path / "raw")
    assert run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out"),
                   "--option", "review_export=jsonl").returncode == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "review_queue.jsonl").read_text().splitlines()]
    lines[0].update(decision="reject", fingerprint="0000000000000000")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out2"),
                     "--option", f"review={tmp_path / 'd.jsonl'}")
    assert result.returncode == 0, result.stderr
    assert len(json.loads((tmp_path / "out2" / "ms_cxr_t_comparison.json").read_text())) == len(lines)
    assert "(1 stale)" in (tmp_path / "out2" / "DATASET_CARD.md").read_text()


def test_a_bad_decision_names_the_file_and_row(tmp_path: Path) -> None:
    raw = make_ms_cxr_t(tmp_path / "raw")
    assert run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out"),
                   "--option", "review_export=csv").returncode == 0
    _decide(tmp_path / "out" / "review_queue.csv", tmp_path / "decisions.csv", {2: {"decision": "maybe"}})
    result = run_cli("data", "build", "ms-cxr-t", "--source", str(raw), "--out", str(tmp_path / "out2"),
                     "--option", f"review={tmp_path / 'decisions.csv'}")
    assert result.returncode != 0
    assert "decisions.csv row 4: unknown decision 'maybe'" in result.stderr
    assert not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------- units
def test_schema_validator_and_reply_checks() -> None:
    from medmim_eval.dataset_builders.llm_questions import check_reply, schema_errors
    from medmim_eval.dataset_builders.question_templates import open_draft

    schema = {"type": "object", "required": ["q"], "properties": {"q": {"type": "string", "minLength": 3}},
              "additionalProperties": False}
    assert schema_errors({"q": "abcd"}, schema) == []
    assert schema_errors({"q": 3}, schema) == ["answer.q must be of type string"]
    assert schema_errors({"q": "ab", "x": 1}, schema) == ["answer has unexpected key 'x'", "answer.q is shorter than 3 characters"]
    assert schema_errors([], schema) == ["answer must be of type object"]
    draft = open_draft(file_stem="f", ability="a", item_id="i", images=["x.png"], question="Q?", answer="worse",
                       source_tag="T", required=[("worse", "progress")])
    assert check_reply('```json\n{"question": "How did it change?", "answer": "It got worse."}\n```', draft)[1] == []
    assert "gold fact" in check_reply('{"question": "How did it change?", "answer": "Better."}', draft)[1][0]
    assert "option lines" in check_reply('{"question": "Which?\\nA: one", "answer": "worse"}', draft)[1][0]


def test_comma_joined_llm_options_are_split() -> None:
    from medmim_eval.dataset_builders.llm_questions import settings_from_options

    settings = settings_from_options({"llm_base_url": "http://127.0.0.1:8000/v1,llm_model=m,llm_attempts=5"})
    assert settings is not None and (settings.base_url, settings.model, settings.attempts) == ("http://127.0.0.1:8000/v1", "m", 5)
    assert settings_from_options({}) is None
    spec = settings_from_options({"llm": "openai:gpt-x,base_url=http://localhost:9/v1"})
    assert spec is not None and (spec.model, spec.base_url) == ("gpt-x", "http://localhost:9/v1")
