"""The reference inference engine: continuous batching on a llama2.c model over the paged KV cache.

    from llmds.engine import Engine, Request, SamplingParams, load_stories260k

    engine = load_stories260k()                       # the stories260K model (shipped with llmds)
    r = engine.generate(Request("Once upon a time", max_tokens=60, sampling=SamplingParams(temperature=0)))
    r.text, r.reason, r.tokens_per_s
    for token, text in engine.stream(Request("Once upon a time", max_tokens=40)):
        print(text, end="", flush=True)

Requests run on the engine's own thread; ``generate`` waits for one with the GIL released,
``generate_async`` returns a handle (``result()``, ``cancel()``), ``stream`` an iterator of
(token id, text piece). A request's ``on_token`` callback runs on the engine thread; if it raises,
that request ends with reason ``"error"`` and the others go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmds._core import Engine as Engine
from llmds._core import GenerationHandle as GenerationHandle
from llmds._core import Request as Request
from llmds._core import Response as Response
from llmds._core import SamplingParams as SamplingParams
from llmds._core import TokenStream as TokenStream
from llmds.data import locate

STORIES_MODEL = "models/stories260K.bin"
STORIES_TOKENIZER = "models/tok512.bin"


def load_stories260k(data: str | Path | None = None, **config: Any) -> Engine:
    """An Engine on the stories260K model and its 512-token vocabulary. From the folder `data` when
    it is given; otherwise from the data folder ($LLMDS_DATA_DIR or ../shared/data) if it has them,
    else from the copy inside the package (``llmds.data.locate``). `config` goes to Engine
    (page_size, max_pages, max_batch_tokens, max_sequences, enable_prefix_caching, num_threads, and the
    tiers below the KV arena: host_pages, disk_pages, disk_directory, offload_policy,
    reclaim_pages)."""
    if data is None:
        model, tokenizer = locate(STORIES_MODEL), locate(STORIES_TOKENIZER)
    else:
        model, tokenizer = Path(data) / STORIES_MODEL, Path(data) / STORIES_TOKENIZER
        for path in (model, tokenizer):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found")
    return Engine(str(model), str(tokenizer), **config)


__all__ = [
    "Engine",
    "GenerationHandle",
    "Request",
    "Response",
    "SamplingParams",
    "TokenStream",
    "load_stories260k",
]
