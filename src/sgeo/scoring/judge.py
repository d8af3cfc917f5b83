"""An LLM judge behind any OpenAI-compatible chat endpoint (vLLM, llama.cpp, ...), scoring as SpatialRGPT.

`ChatJudge` sends `judge_prompts`' messages to `<base>/chat/completions` with the standard library only (the
API base and key header as `clients.openai_compatible` reads them).
`judge_record` scores one answers.jsonl record, reusing the verdict cached in the record (`record["judge"]`)
when the same judge model was asked the same messages, so rescoring costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

from sgeo.clients.openai_compatible import api_base, auth_headers
from sgeo.errors import SgeoError, one_line

from .judge_prompts import judge_kind, judge_messages, judge_prompt, read_verdict, reference_format_fails


class JudgeError(SgeoError):
    """The judge endpoint could not be reached or did not answer like an OpenAI chat endpoint."""


class ChatJudge:
    """Chat completions from `url`; `model` defaults to the first model the endpoint lists."""

    def __init__(self, url: str, model: str | None = None, timeout: float = 300.0):
        self.base, self.timeout, self.requested_model = api_base(url, "--judge"), timeout, model
        self._model = model
        self.calls = 0  # requests made (the cache saves the rest)

    def _request(self, path: str, body: dict | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            detail = one_line(e.read().decode("utf-8", "replace"), 200)
            raise JudgeError(f"judge endpoint {self.base}{path} answered HTTP {e.code}: {detail}") from None
        except (TimeoutError, urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeError(
                f"judge endpoint {self.base} is unreachable ({reason}); start the server or score without --judge"
            ) from None
        try:
            return json.loads(text)
        except ValueError:
            raise JudgeError(
                f"judge endpoint {self.base}{path} did not answer JSON: {text[:120]!r}"
            ) from None

    @property
    def model(self) -> str:
        if self._model is None:
            listed = self._request("/models").get("data") or []
            if not listed or not isinstance(listed[0], dict) or "id" not in listed[0]:
                raise JudgeError(f"judge endpoint {self.base}/models lists no model; pass --judge-model")
            self._model = str(listed[0]["id"])
        return self._model

    def complete(
        self,
        messages: list[dict[str, str]],
        json_reply: bool = True,
        temperature: float = 0,
        max_tokens: int | None = None,
    ) -> str:
        """The reply text to `messages`: JSON output as SpatialRGPT asks, or free text as BLINK's option
        matcher and MM-Vet's grader ask; deterministic (temperature 0) unless the grader's retries raise it."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if json_reply:
            body["response_format"] = {"type": "json_object"}
        body["temperature"] = temperature  # SpatialRGPT's script takes the API default; 0 is reproducible
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        reply = self._request("/chat/completions", body)
        self.calls += 1
        try:
            return str(reply["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise JudgeError(
                f"judge endpoint {self.base} answered without choices[0].message.content"
            ) from None


def cache_key(model: str, messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()[:16]


def cached_reply(
    record: dict[str, Any], judge: ChatJudge, messages: list[dict[str, str]], json_reply: bool = True
) -> tuple[str, bool]:
    """(reply, asked): the judge's reply to `messages` for this record, from `record["judge"]` when it
    answered these very messages, else from the endpoint (`asked` True, and the reply stored there)."""
    cached = record.get("judge")
    # A verdict is reused when it answered these very messages, from the model asked for (any model when
    # none was named: then rescoring a fully judged file needs no endpoint at all).
    asked = not (
        isinstance(cached, dict)
        and "reply" in cached
        and cached.get("key") == cache_key(str(cached.get("model")), messages)
        and judge.requested_model in (None, cached.get("model"))
    )
    if asked:
        model = judge.model
        record["judge"] = {
            "model": model,
            "key": cache_key(model, messages),
            "reply": judge.complete(messages, json_reply),
        }
    return str(record["judge"]["reply"]), asked


def judge_record(record: dict[str, Any], judge: ChatJudge) -> tuple[dict[str, Any], bool] | None:
    """(score, asked) for one record: its verdict from the cache or from the endpoint (`asked` True, and the
    reply stored in `record["judge"]`). None when SpatialRGPT's script would not judge it (the rules do)."""
    kind = judge_kind(record)
    if kind is None:
        return None
    info = record.get("qa_info") or {}
    category = str(info.get("category", ""))
    # their answers files carry text_q as "question"; ours keep it as text_q when the bench has one
    question = str(record.get("text_q") or record.get("question") or "")
    texts = (question, str(record.get("gt", "")), str(record.get("pred") or ""))
    prompt = judge_prompt(kind, *texts, category)
    if prompt is None:  # no examples for this category: their script fails the item
        return {"kind": kind, **read_verdict(kind, None)}, False
    reply, asked = cached_reply(record, judge, judge_messages(prompt))
    out = {"kind": kind, **read_verdict(kind, reply)}
    if reference_format_fails(kind, *texts, category):
        out["reference_format_fails"] = True
    return out, asked
