"""The OpenAI-compatible client against local servers on 127.0.0.1: scripted faults, and a real tiny causal LM.

The tiny server runs a random 1-layer Qwen3 (``make_tiny_causal_reranker``) with ``model.generate``
behind ``/v1/chat/completions``, with vLLM's ``allowed_token_ids`` extension and OpenAI
``logprobs`` / ``top_logprobs`` / ``usage``, so the whole path (prompt, HTTP, generation, parsing,
expected ratings, token reports, cascade, adapters, CLI) runs end to end with no download.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crossrank import Candidate, Reranker
from crossrank.cascade import Cascade
from crossrank.llm import LLMScorer, OpenAICompatibleClient, parse_permutation, plan_windows
from crossrank.llm.scorer import THINKING_TOKENS
from crossrank.scoring.base import Scored, ScorerInfo, ScoreSettings

Reply = tuple[int, Any, float]  # status, JSON body (or raw text), delay in seconds
QUERY = "python snake care"
DOCS = [
    "a ball python eats mice",
    "python is a programming language",
    "snakes shed their skin",
    "coffee and sleep",
    "feeding a pet snake",
    "the stock market",
]


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 that answers every request with ``reply(path, body)``."""

    def __init__(self, reply: Callable[[str, Any], Reply]) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: Any) -> None:
                outer.requests.append((self.path, dict(self.headers), body))
                status, payload, delay = reply(self.path, body)
                time.sleep(delay)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout)
                    pass

            def do_POST(self) -> None:
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def do_GET(self) -> None:
                self._answer(None)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def chats(self) -> list[Any]:
        return [b for p, _, b in self.requests if p.endswith("/chat/completions")]


def completion(text: str, usage: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    if usage:
        out["usage"] = {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}
    return out


@pytest.fixture
def scripted() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*replies: Reply, models: list[str] | None = None) -> Server:
        queue = list(replies)

        def reply(path: str, body: Any) -> Reply:
            if path.endswith("/models"):
                return (200, {"data": [{"id": m} for m in models]}, 0.0) if models else (404, "no such route", 0.0)
            return queue.pop(0) if len(queue) > 1 else queue[0]

        servers.append(Server(reply))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def rank(scorer: LLMScorer, docs: list[str] = DOCS) -> tuple[list[int], dict[str, Any]]:
    s = scorer.score(QUERY, docs, ScoreSettings())
    return sorted(range(len(docs)), key=lambda i: (-s.raw[i], i)), s.details


# --------------------------------------------------------------------------- scripted faults


def test_url_forms_model_discovery_and_headers(scripted: Callable[..., Server]) -> None:
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/chat/completions"):
        assert OpenAICompatibleClient(url).url == "http://h:1/v1/chat/completions"
    server = scripted((200, completion("[2] > [1]"), 0.0), models=["served-model"])
    got, d = rank(LLMScorer(server.url, api_key="sk-test"))
    assert got == [1, 0, 2, 3, 4, 5]
    body = server.chats[0]
    assert body["model"] == "served-model" and body["temperature"] == 0.0
    assert body["max_tokens"] == 6 * 6 + 32 + THINKING_TOKENS  # the answer, and room to think before it
    assert server.requests[-1][1]["Authorization"] == "Bearer sk-test"
    assert (d["prompt_tokens"], d["completion_tokens"], d["tokens_estimated"], d["backend"]) == (
        120,
        9,
        0,
        "openai-http",
    )
    no_list = scripted((200, completion("[1]", usage=False), 0.0))
    _, d = rank(LLMScorer(no_list.url))
    assert "model" not in no_list.chats[0] and d["tokens_estimated"] == 1 and d["prompt_tokens"] > 100


def test_http_retries_transient_statuses_only(scripted: Callable[..., Server]) -> None:
    server = scripted((503, "overloaded", 0.0), (429, "slow down", 0.0), (200, completion("[3] > [1]"), 0.0))
    got, d = rank(LLMScorer(server.url, model="m", retry_backoff_s=0))
    assert got == [2, 0, 1, 3, 4, 5] and (d["llm_calls"], d["retries"], d["failures"]) == (3, 2, [])

    bad = scripted((400, "bad request", 0.0))
    got, d = rank(LLMScorer(bad.url, model="m", retry_backoff_s=0))
    assert got == list(range(6)) and d["llm_calls"] == 1
    assert d["failures"][0]["reason"].startswith("LLMCallError: HTTP 400")

    garbage = scripted((200, "<html>not json</html>", 0.0))
    _, d = rank(LLMScorer(garbage.url, model="m"))
    assert "invalid JSON" in d["failures"][0]["reason"] and d["llm_calls"] == 1

    slow = scripted((200, completion("[2] > [1]"), 1.5))
    t = time.perf_counter()
    got, d = rank(LLMScorer(slow.url, model="m", timeout_s=0.2, retries=0))
    assert time.perf_counter() - t < 1.2 and got == list(range(6))
    assert d["failures"][0]["reason"].startswith("timed out")

    down = LLMScorer("http://127.0.0.1:9", model="m", retries=1, retry_backoff_s=0)
    got, d = rank(down)
    assert got == list(range(6)) and d["llm_calls"] == 2 and "ConnectError" in d["failures"][0]["reason"]


def test_server_without_logprobs_is_asked_without_them(scripted: Callable[..., Server]) -> None:
    server = scripted((400, '{"error": "logprobs are not supported"}', 0.0), (200, completion("7"), 0.0))
    scorer = LLMScorer(server.url, model="m", mode="pointwise", max_concurrency=1)
    s = scorer.score(QUERY, DOCS[:3], ScoreSettings())
    assert s.raw.tolist() == [7.0, 7.0, 7.0]
    assert [("logprobs" in b) for b in server.chats] == [True, False, False, False]
    assert s.details["llm_calls"] == 3  # the refused request is not a call of the budget


# --------------------------------------------------------------------------- a real tiny causal LM


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A random tiny Qwen3 served as an OpenAI-compatible chat server; yields its URL, tokenizer and records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

    from crossrank.testing_causal import make_tiny_causal_reranker

    path = make_tiny_causal_reranker(Path(tmp_path_factory.mktemp("tiny-llm")), "qwen3")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    lock = threading.Lock()
    records: dict[str, Any] = {"expected": {}, "answers": [], "prompt_tokens": 0, "completion_tokens": 0}

    class Allowed(LogitsProcessor):
        def __init__(self, ids: list[int]) -> None:
            self.mask = torch.full((model.config.vocab_size,), float("-inf"))
            self.mask[ids] = 0.0

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return scores + self.mask

    class RankingFormat(LogitsProcessor):
        """A stand-in for vLLM's guided_regex / llama.cpp grammars: ``[d] > [d] > ...``, the model picks each d."""

        def __init__(self, prompt_len: int, n: int) -> None:
            self.start = prompt_len
            self.steps = [[tok.convert_tokens_to_ids(c)] for c in ("[", None, "]", "Ġ", ">", "Ġ") if c is not None]
            self.steps.insert(1, [tok.convert_tokens_to_ids(str(d)) for d in range(1, n + 1)])

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            mask = torch.full_like(scores, float("-inf"))
            mask[:, self.steps[(input_ids.shape[1] - self.start) % len(self.steps)]] = 0.0
            return scores + mask

    def reply(path: str, body: Any) -> Reply:
        if path.endswith("/models"):
            return 200, {"data": [{"id": "tiny-qwen3"}]}, 0.0
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in body["messages"])
        ids = tok(text + "<|im_start|>assistant\n", return_tensors="pt").input_ids
        allowed = body.get("allowed_token_ids")
        processors: list[Any] = [Allowed(allowed)] if allowed else []
        if body.get("guided_ranking"):
            processors.append(RankingFormat(ids.shape[1], int(body["guided_ranking"])))
        with lock, torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=min(int(body.get("max_tokens", 16)), 64),
                do_sample=False,
                logits_processor=processors or None,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
            )
        gen = out.sequences[0, ids.shape[1] :].tolist()
        steps = [torch.log_softmax(s[0].float(), -1) for s in out.scores]
        content = []
        for t, lp in zip(gen, steps):
            k = min(int(body.get("top_logprobs", 0)), int(torch.isfinite(lp).sum()))
            top = torch.topk(lp, k) if k else None
            alts = [] if top is None else list(zip(top.indices.tolist(), top.values.tolist()))
            content.append(
                {
                    "token": tok.decode([t]),
                    "logprob": float(lp[t]),
                    "top_logprobs": [{"token": tok.decode([i]), "logprob": v} for i, v in alts],
                }
            )
        if allowed and steps:  # what the client should compute from the first token's distribution
            p = steps[0].exp()
            names = {i: str(tok.decode([i])) for i in allowed}
            digits = {int(name): float(p[i]) for i, name in names.items() if name.isdigit()}
            records["expected"][body["messages"][-1]["content"]] = sum(d * q for d, q in digits.items()) / sum(
                digits.values()
            )
        records["prompt_tokens"] += ids.shape[1]
        records["completion_tokens"] += len(gen)
        records["answers"].append(tok.decode(gen))
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": tok.decode(gen)}}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": content}
        usage = {"prompt_tokens": ids.shape[1], "completion_tokens": len(gen)}
        return 200, {"choices": [choice], "usage": usage}, 0.0

    server = Server(reply)
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    ranking_ids = digit_ids + [tok.convert_tokens_to_ids(c) for c in ("[", "]", ">", "Ġ")]
    yield {
        "url": server.url,
        "tok": tok,
        "count": lambda s: len(tok(s).input_ids),
        "records": records,
        "digits": digit_ids,
        "ranking": ranking_ids,
    }
    server.close()


def test_tiny_llm_pointwise_expected_ratings_from_logprobs(tiny_llm: dict[str, Any]) -> None:
    client = OpenAICompatibleClient(tiny_llm["url"], extra_body={"allowed_token_ids": tiny_llm["digits"]})
    scorer = LLMScorer(
        client, mode="pointwise", max_completion_tokens=1, count_tokens=tiny_llm["count"], max_prompt_tokens=900
    )
    records = tiny_llm["records"]
    before = records["prompt_tokens"], records["completion_tokens"]
    s = scorer.score(QUERY, DOCS, ScoreSettings())
    d = s.details
    assert d["rated_by_logprobs"] == d["llm_calls"] == len(DOCS) and d["failures"] == []
    expected = [next(v for k, v in records["expected"].items() if f"[1] {doc}\n" in k) for doc in DOCS]
    assert s.raw.tolist() == pytest.approx(expected, abs=1e-6)
    assert len(set(s.raw.tolist())) == len(DOCS)  # expected ratings separate what argmax digits would tie
    assert (d["prompt_tokens"], d["completion_tokens"]) == (
        records["prompt_tokens"] - before[0],
        records["completion_tokens"] - before[1],
    )
    assert d["tokens_estimated"] == 0 and d["model"] == client.model_name


def test_tiny_llm_listwise_end_to_end(tiny_llm: dict[str, Any]) -> None:
    docs = DOCS + [f"extra passage {i} about snakes" for i in range(4)]
    records = tiny_llm["records"]

    free = OpenAICompatibleClient(tiny_llm["url"], extra_body={"allowed_token_ids": tiny_llm["ranking"]})
    s = LLMScorer(free, window=4, step=2, count_tokens=tiny_llm["count"], max_prompt_tokens=400).score(
        QUERY, docs, ScoreSettings()
    )
    assert sorted(s.raw.tolist()) == [float(k) for k in range(1, len(docs) + 1)]  # a full synthetic ranking
    d = s.details
    assert d["prompts"] == d["llm_calls"] == 4 and d["model"] == "tiny-qwen3" and d["trimmed_documents"] > 0
    # A random model answers noise: each window it garbled kept its order and is reported, never raised.
    assert all(f["reason"] == "no usable ranking in the answer" for f in d["failures"])

    guided = OpenAICompatibleClient(tiny_llm["url"], extra_body={"guided_ranking": 4})
    first = len(records["answers"])
    s = LLMScorer(guided, window=4, step=2, count_tokens=tiny_llm["count"], max_prompt_tokens=400).score(
        QUERY, docs, ScoreSettings()
    )
    d = s.details
    answers = records["answers"][first:]
    assert d["failures"] == [] and len(answers) == 4 and all(a.startswith("[") for a in answers)
    order = list(range(len(docs)))  # replay the windows from the model's own answers
    missing = duplicates = 0
    for (start, end), answer in zip(plan_windows(len(docs), 4, 2), answers):
        perm = parse_permutation(answer, end - start)
        sub = order[start:end]
        order[start:end] = [sub[i] for i in perm.order]
        missing, duplicates = missing + len(perm.missing), duplicates + perm.duplicates
    assert sorted(range(len(docs)), key=lambda i: -s.raw[i]) == order
    assert (d["missing_ids"], d["duplicate_ids"], d["unknown_ids"]) == (missing, duplicates, 0)
    assert d["prompt_tokens"] > 4 * 300 and d["tokens_estimated"] == 0


class WordOverlap:
    """A deterministic stand-in cross-encoder: raw score = words shared with the query."""

    identity = "overlap"

    def describe(self) -> ScorerInfo:
        return ScorerInfo(kind="cross-encoder", model="overlap", backend="python", max_length=None)

    def score(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        import numpy as np

        q = set(query.split())
        raw = np.array([float(len(q & set(t.split()))) for t in texts])
        return Scored(raw=raw, windows=[1] * len(texts), truncated=[False] * len(texts))

    async def ascore(self, query: str, texts: Any, settings: ScoreSettings) -> Scored:
        return self.score(query, texts, settings)


def test_tiny_llm_cascade_and_adapters(tiny_llm: dict[str, Any]) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from langchain_crossrank import CrossRankCompressor
    from llama_index.postprocessor.crossrank import CrossRankRerank

    kwargs = {"window": 3, "step": 2, "count_tokens": tiny_llm["count"], "max_prompt_tokens": 400}
    ce = Reranker(WordOverlap())
    cascade = Cascade([(ce, None), (Reranker(LLMScorer(tiny_llm["url"], **kwargs)), 3)])
    res = cascade.rerank(QUERY, DOCS, top_n=5)
    assert len(res) == 5 and sorted(r.index for r in res[:3]) == sorted(ce.rerank(QUERY, DOCS).indices[:3])
    assert [r.index for r in res[3:]] == ce.rerank(QUERY, DOCS).indices[3:5]
    assert [s.name for s in res[0].stages] == ["cross-encoder", "llm-listwise"]
    json.dumps(res.to_dict())

    lc = CrossRankCompressor(reranker=ce, llm=tiny_llm["url"], llm_top_k=3, llm_kwargs=kwargs, top_n=4)
    out = lc.compress_documents([Document(page_content=t, id=str(i)) for i, t in enumerate(DOCS)], QUERY)
    assert len(out) == 4 and [s["name"] for s in out[0].metadata["rerank_stages"]] == ["cross-encoder", "llm-listwise"]
    li = CrossRankRerank(reranker=ce, llm=tiny_llm["url"], llm_top_k=3, llm_kwargs=kwargs, top_n=4)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]
    got = li.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in got] == [d.id for d in out]  # same LLM, same prompts, same order


def test_cli_query_with_llm(
    tiny_llm: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crossrank.cli import common, main

    class FakePipeline:
        reranker = Reranker(WordOverlap())
        embedder_runtime = "none: the candidates are given"

        def retrieve(self, query: str, **kw: Any) -> list[tuple[Candidate, float]]:
            return [(Candidate(text=t, id=f"d{i}"), 0.1 * i) for i, t in enumerate(DOCS)]

    monkeypatch.setattr(common, "pipeline", lambda *a, **k: FakePipeline())
    code = main(["query", QUERY, "--llm", tiny_llm["url"], "--llm-top-k", "3", "--top-n", "4", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["hits"]) == 4 and [s["name"] for s in out["hits"][0]["stages"]] == ["cross-encoder", "llm-listwise"]
    assert out["model"] == f"overlap > {tiny_llm['url']}/v1/chat/completions"  # named before the server was asked
    code = main(["query", QUERY, "--llm", tiny_llm["url"], "--llm-top-k", "3"])
    text = capsys.readouterr().out
    assert code == 0 and "LLM stage (listwise, top 3" in text
    assert main(["query", QUERY, "--llm", tiny_llm["url"], "--llm-top-k", "0"]) == 2
