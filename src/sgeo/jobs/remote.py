"""`sgeo eval --model openai:NAME --endpoint URL`: a model behind any OpenAI-compatible chat endpoint (GPT-4.1,
a vLLM server, another `sgeo serve`) answers a benchmark, scored by the same loaders and scorers as a local one.

Each item becomes one `POST <base>/chat/completions` (`clients.openai_compatible`: the request, its retries):
the protocol's system prompt as a system message (when it has one), then one user message whose content parts
follow the human turn, each "<image>" replaced by its image as a data URL (the file's own bytes where the API
takes them, PNG otherwise). Greedy decoding is sent as temperature 0; a sampling protocol sends its
temperature and the item's seed (`item_seed`, as the local path), but not its top-k, which OpenAI's API does
not have.

Requests run concurrently (at most `concurrency` at a time). Answers are appended to answers.jsonl by one
thread as they arrive (in arrival order), so a stopped run resumes like a local one. An item the endpoint
refuses is recorded with the endpoint's reason as its `error` (answered again by a rerun); a refusal of
everything (401, 403, 404, or the first requests all refused) stops the run in one line, the answers so far
kept.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ..clients.openai_compatible import (
    MAX_RETRIES,
    PREFIX,
    Client,
    Fatal,
    Refused,
    RemoteModel,
    api_base,
    data_url,
    messages_for,
    reply_text,
    request_body,
)
from ..errors import SgeoError

DEFAULT_CONCURRENCY = 8
REFUSED_ALL = 3  # this many refusals before any answer: the endpoint refuses every item, stop


def is_remote(model: str) -> bool:
    return str(model).startswith(PREFIX)


def remote_model(model: str, endpoint: str | None) -> RemoteModel | None:
    """The remote model `--model openai:NAME --endpoint URL` names, None for a local one; refused in one line
    when one of the two options comes without the other, or the URL is not http(s)."""
    if not is_remote(model):
        if endpoint is not None:
            raise SgeoError(
                f"--endpoint applies to a model behind an API; pass --model openai:NAME (not {model!r})"
            )
        return None
    name = str(model)[len(PREFIX) :].strip()
    if not name:
        raise SgeoError("--model openai: needs the endpoint's model name, e.g. --model openai:gpt-4.1")
    if endpoint is None:
        raise SgeoError(
            f"--model {model} needs --endpoint URL (an OpenAI-compatible API base, e.g. https://api.openai.com/v1)"
        )
    return RemoteModel(name, api_base(endpoint, "--endpoint"))


def answer_remote(
    remote: RemoteModel,
    items: list,
    prompts: dict,
    image_root: Path,
    answers: Path,
    decoding,
    concurrency: int = DEFAULT_CONCURRENCY,
    run: dict[str, Any] | None = None,
    say=lambda text: None,
    max_retries: int = MAX_RETRIES,
) -> dict[str, int]:
    """Ask `remote` every item, at most `concurrency` at a time, appending each record to `answers` as it
    arrives (records as `pipeline.answers.answer_record` writes them). Returns {"answered", "refused", "retries"}."""
    from tqdm.auto import tqdm

    from ..benchmarks import model_images
    from ..model.sampling import item_seed
    from ..pipeline.answers import answer_record, append_answer
    from ..pipeline.images import load_image, resolve_inside

    run = run or {}
    stop = threading.Event()
    client = Client(remote, stop, max_retries)
    url = remote.base + "/chat/completions"

    def ask(item) -> dict[str, Any]:
        """One item's record (called in a worker thread; only the main thread writes the file)."""
        prompt = prompts[item.question_id]
        extra = {**run, "prompt": prompt.human}
        try:
            loaded = [load_image(resolve_inside(image_root, path)) for path in prompt.images]
        except SgeoError as error:  # unreadable, missing or outside the root: recorded, as the local path
            return answer_record(item, "", error=str(error), **extra)
        pictures = model_images(prompt, [picture for picture, _ in loaded])
        if prompt.tile or prompt.upscale_tiny:  # the protocol changed the pictures: send what it made
            urls = [data_url(b"", picture) for picture in pictures]
        else:
            urls = [data_url(raw) for _, raw in loaded]
        seed = item_seed(int(run.get("seed", 0)), item.question_id) if decoding.sample else None
        body = request_body(remote, messages_for(prompt, urls), decoding, seed)
        try:
            reply = client.complete(body, f"item {item.question_id}")
        except Refused as refused:
            return {**answer_record(item, "", error=str(refused), **extra), "refused": True}
        return answer_record(item, reply_text(reply, url), **extra)

    counts = {"answered": 0, "refused": 0, "retries": 0}
    fatal: BaseException | None = None
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sgeo-remote")
    pending: set[Future] = set()
    queue = iter(items)
    try:
        with tqdm(total=len(items), desc="eval", unit="q", file=sys.stderr, dynamic_ncols=True) as bar:
            # at most `concurrency` requests in flight, so a stop leaves little unrecorded work behind
            for item in queue:
                pending.add(executor.submit(ask, item))
                if len(pending) >= concurrency:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        record = future.result()
                    except Fatal as error:
                        if fatal is None and str(error) != "stopped":
                            fatal = error
                        stop.set()
                        continue
                    if record.pop("refused", False):
                        counts["refused"] += 1
                        if counts["answered"] == 0 and counts["refused"] >= min(REFUSED_ALL, len(items)):
                            fatal = fatal or Fatal(
                                f"{url} refused the first {counts['refused']} items ({record['error']}); "
                                "is this benchmark's request something the endpoint takes?"
                            )
                            stop.set()
                    elif "error" not in record:
                        counts["answered"] += 1
                    append_answer(answers, record)
                    bar.update(1)
                while not stop.is_set() and len(pending) < concurrency:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(executor.submit(ask, item))
    finally:
        stop.set()  # a Ctrl-C: the workers stop retrying; answers already written stay
        executor.shutdown(wait=fatal is not None, cancel_futures=True)
    counts["retries"] = client.retries
    if fatal is not None:
        raise fatal
    if counts["retries"]:
        say(f"eval: {counts['retries']} requests retried (HTTP 429 / 5xx / connection)")
    return counts
