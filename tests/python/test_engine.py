"""llmds.engine: parity with the llama2.c reference outputs, batching, streaming, cancellation,
callbacks and errors, through the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmds.engine import STORIES_MODEL, STORIES_TOKENIZER, Engine, Request, SamplingParams, load_stories260k

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> dict[str, Any]:
    with (shared_data / "models" / "reference_outputs.json").open() as f:
        return json.load(f)


@pytest.fixture(scope="module")
def model_files(data_file: Callable[[str], Path]) -> tuple[Path, Path]:
    """stories260K and its tokenizer: the data folder's, else the package's own copies."""
    return data_file(STORIES_MODEL), data_file(STORIES_TOKENIZER)


@pytest.fixture()
def engine(model_files: tuple[Path, Path]) -> Engine:
    return Engine(*map(str, model_files))


def test_greedy_64_step_runs_match_token_for_token(engine: Engine, reference: dict[str, Any]) -> None:
    for run, prompt in (("stories260K_greedy_once_n64", "Once upon a time"), ("stories260K_greedy_empty_n64", "")):
        ref = reference["runs"][run]
        assert engine.encode(prompt) == ref["prompt_token_ids"]
        r = engine.generate(Request(prompt, max_tokens=64 - len(ref["prompt_token_ids"]) + 1, sampling=GREEDY))
        assert r.tokens == ref["generated_token_ids"]
        assert r.reason == "max_tokens"
        # run.c echoes the prompt and ends with a newline.
        assert prompt + r.text + "\n" == ref["stdout_text"]


def test_greedy_256_steps_top_logits_within_tolerance(engine: Engine, reference: dict[str, Any]) -> None:
    ref = reference["runs"]["stories260K_greedy_once_n256"]
    r = engine.generate(Request("Once upon a time", max_tokens=252, sampling=GREEDY, top_logits=2))
    assert r.tokens == ref["generated_token_ids"]
    sampled = [s for s in ref["per_step"] if not s["forced"]]
    assert len(sampled) == len(r.top_logits) == 252
    worst = 0.0
    for step, ours in zip(sampled, r.top_logits):
        assert ours[0][0] == step["top1"]
        worst = max(worst, abs(ours[0][1] - step["top1_logit"]))
        if ours[1][0] == step["top2"]:
            worst = max(worst, abs(ours[1][1] - step["top2_logit"]))
    assert worst < 1e-3, f"largest logit difference from run.c: {worst}"


def test_seeded_sampling_matches_the_reference_rng(engine: Engine, reference: dict[str, Any]) -> None:
    ref = reference["runs"]["stories260K_sampled_t0.8_p0.9_s42_once_n64"]
    req = Request("Once upon a time", max_tokens=60, sampling=SamplingParams(temperature=0.8, top_p=0.9, seed=42))
    first = engine.generate(req)
    assert first.tokens == ref["generated_token_ids"]
    assert engine.generate(req).tokens == first.tokens
    story = reference["runs"]["stories260K_sampled_t1_p0.9_s133742_default_steps"]
    long = engine.generate(Request("", max_tokens=256, sampling=SamplingParams(temperature=1.0, top_p=0.9, seed=133742)))
    assert long.tokens == story["generated_token_ids"]


def test_batched_requests_give_the_tokens_they_give_alone(engine: Engine) -> None:
    prompts = ["Once upon a time", "Tom had a red ball", "Once upon a time, there was a cat", "The sun"]
    alone = [engine.generate(Request(p, max_tokens=50, sampling=GREEDY)).tokens for p in prompts]
    handles = [engine.generate_async(Request(p, max_tokens=50, sampling=GREEDY)) for p in prompts]
    assert [h.result(timeout=60).tokens for h in handles] == alone


def test_stream_yields_the_pieces_of_the_text(engine: Engine) -> None:
    stream = engine.stream(Request("Once upon a time", max_tokens=30, sampling=GREEDY))
    pieces = list(stream)
    r = stream.response()
    assert [t for t, _ in pieces] == r.tokens
    assert "".join(text for _, text in pieces) == r.text


def test_on_token_callback_and_cancellation(engine: Engine) -> None:
    seen: list[int] = []
    handle_box: list[Any] = []

    def on_token(token: int, text: str) -> None:
        seen.append(token)
        if len(seen) == 5:
            handle_box[0].cancel()

    handle = engine.generate_async(Request("Once upon a time", max_tokens=400, sampling=GREEDY, on_token=on_token))
    handle_box.append(handle)
    r = handle.result(timeout=60)
    assert r.reason == "cancelled"
    assert 5 <= r.output_tokens < 400
    assert r.tokens == seen[: r.output_tokens]
    assert not engine.cancel(handle.id)


def test_a_callback_that_raises_ends_its_request_with_an_error(engine: Engine) -> None:
    def boom(token: int, text: str) -> None:
        raise RuntimeError("disk full")

    bad = engine.generate_async(Request("Once upon a time", max_tokens=50, on_token=boom))
    good = engine.generate_async(Request("Tom had a red ball", max_tokens=20, sampling=GREEDY))
    r = bad.result(timeout=60)
    assert r.reason == "error" and "disk full" in r.error
    assert good.result(timeout=60).reason == "max_tokens"


def test_prefix_reuse_and_stop_conditions(engine: Engine) -> None:
    system = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    first = engine.generate(Request(system + " One day", max_tokens=20, sampling=GREEDY))
    second = engine.generate(Request(system + " One day", max_tokens=20, sampling=GREEDY))
    assert first.cached_prompt_tokens == 0 and second.cached_prompt_tokens >= 16
    assert second.tokens == first.tokens
    stopped = engine.generate(Request("Once upon a time", max_tokens=60, sampling=GREEDY, stop_strings=["Lily"]))
    assert stopped.reason == "stop_string" and stopped.text == ", there was a little girl named "
    st = engine.stats()
    assert st["cached_prompt_tokens"] >= 16 and st["requests_finished"] == 3


def test_load_stories260k_finds_the_model_where_the_package_does(engine: Engine) -> None:
    # From the data folder or the package's own copy (llmds.data.locate): the same model either way.
    loaded = load_stories260k()
    request = Request("Once upon a time", max_tokens=8, sampling=GREEDY)
    assert loaded.generate(request).tokens == engine.generate(request).tokens


def test_bad_requests_raise_value_error(engine: Engine, model_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, tokenizer = model_files
    with pytest.raises(ValueError):
        engine.generate(Request("x", max_tokens=0))
    with pytest.raises(ValueError):
        engine.generate(Request(prompt_tokens=[1, 9999]))
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=1.5)
    with pytest.raises(TypeError):
        Request("x", on_token=5)
    with pytest.raises(IndexError):
        engine.decode([600])
    with pytest.raises(ValueError):
        Engine(model, tokenizer, page_size=0)
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(model.read_bytes()[:5000])
    with pytest.raises((OSError, ValueError), match="model.bin"):
        Engine(truncated, tokenizer)
    with pytest.raises(FileNotFoundError):
        load_stories260k(tmp_path)


def test_generate_releases_the_gil(engine: Engine) -> None:
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=count)
    t.start()
    engine.generate(Request("Once upon a time", max_tokens=300, sampling=GREEDY))
    stop.set()
    t.join()
    assert ticks > 100


@pytest.mark.parametrize("slo_ms", [-1.0, 0.0, float("nan"), float("inf")])
def test_a_bad_request_field_is_a_value_error_when_the_request_is_made(slo_ms: float) -> None:
    with pytest.raises(ValueError, match="slo_ms"):
        Request("Once", slo_ms=slo_ms)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("max_tokens", {"max_tokens": 0}),
        ("top_logits", {"top_logits": -1}),
        ("stop_token_ids", {"stop_token_ids": [2, -1]}),
        ("prompt_tokens", {"prompt_tokens": [1, -5]}),
        ("stop_strings", {"stop_strings": [""]}),
    ],
)
def test_every_request_field_is_checked_when_the_request_is_made(field: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=field):
        Request("Once", **kwargs)


def test_a_temperature_too_small_to_divide_by_samples_greedily(engine: Engine) -> None:
    greedy = engine.generate(Request("Once upon a time", max_tokens=30, sampling=GREEDY)).tokens
    for sampling in (
        SamplingParams(temperature=1e-38, top_k=5, seed=1),
        SamplingParams(temperature=1e-38, top_p=0.9, seed=1),
        SamplingParams(temperature=1e-45, seed=1),
    ):
        r = engine.generate(Request("Once upon a time", max_tokens=30, sampling=sampling))
        assert r.reason == "max_tokens", r.error
        assert r.tokens == greedy


def test_waiting_for_the_engine_inside_its_own_callback_raises_instead_of_deadlocking(engine: Engine) -> None:
    errors: list[str] = []
    queued = []

    def on_token(token: int, text: str) -> None:
        if queued:
            return
        queued.append(engine.generate_async(Request("Tom", max_tokens=3, sampling=GREEDY)))  # allowed
        for wait in (
            lambda: engine.generate(Request("Hi", max_tokens=2)),
            lambda: queued[0].result(),
            lambda: next(iter(engine.stream(Request("Hi", max_tokens=2)))),
        ):
            try:
                wait()
            except RuntimeError as e:
                errors.append(str(e))

    r = engine.generate(Request("Once upon a time", max_tokens=5, sampling=GREEDY, on_token=on_token))
    assert r.reason == "max_tokens", r.error
    assert len(errors) == 3 and all("own thread" in e for e in errors), errors
    assert queued[0].result(timeout=60).reason == "max_tokens"


def test_dropping_the_last_reference_to_the_engine_inside_its_callback_does_not_hang(model_files: tuple[Path, Path]) -> None:
    code = f"""
from llmds.engine import Engine, Request
holder = [Engine(*{list(map(str, model_files))!r})]
handle = holder[0].generate_async(Request("Once upon a time", max_tokens=50, on_token=lambda t, s: holder.clear()))
print(handle.result(timeout=30).reason)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"cancelled", "max_tokens"}


def test_exiting_right_after_a_request_with_a_callback_is_clean(model_files: tuple[Path, Path]) -> None:
    # The engine thread once dropped the callback after the response was handed over, so an exit
    # racing with it aborted the process (a thread may not take the GIL while Python finalizes).
    code = f"""
from llmds.engine import Engine, Request
engine = Engine(*{list(map(str, model_files))!r})
print(engine.generate(Request("Once", max_tokens=3, on_token=lambda t, s: None)).reason)
"""
    for _ in range(8):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "max_tokens"


def test_exiting_while_a_request_with_a_callback_is_running_is_clean(model_files: tuple[Path, Path]) -> None:
    # Python's exit stops every engine first (its requests end as cancelled): an engine thread
    # that took the GIL once Python had begun to finalize aborted the process.
    code = f"""
import time
from llmds.engine import Engine, Request
engine = Engine(*{list(map(str, model_files))!r})
handle = engine.generate_async(Request("Once", max_tokens=250, ignore_eos=True, on_token=lambda t, s: None))
time.sleep(0.01)
print("bye")
"""
    for _ in range(4):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "bye"


def test_shutdown_cancels_what_is_in_flight_and_refuses_later_requests(engine: Engine) -> None:
    handle = engine.generate_async(Request("Once", max_tokens=250, ignore_eos=True, on_token=lambda t, s: None))
    engine.shutdown()
    assert handle.result(timeout=30).reason in {"cancelled", "max_tokens"}
    with pytest.raises(RuntimeError, match="shut down"):
        engine.generate(Request("Once", max_tokens=2))
    engine.shutdown()  # a second time does nothing


@pytest.mark.parametrize("reclaim_pages", [0, 4])
def test_prefixes_come_back_from_host_and_disk_with_the_same_tokens(
    model_files: tuple[Path, Path], tmp_path: Path, reclaim_pages: int
) -> None:
    # reclaim_pages: pages also go down to host on the reclaimer's thread, ahead of need.
    lily = "Once upon a time, there was a little girl named Lily. She loved to play outside"
    prompts = ["Once upon a time", lily + " in the park.", "Tom had a red ball", lily + " with her dog."]
    unlimited = Engine(*map(str, model_files), page_size=4, max_pages=2048)
    expected = [unlimited.generate(Request(prompt=p, max_tokens=60, sampling=SamplingParams(temperature=0))).tokens
                for p in prompts]
    unlimited.shutdown()
    tiered = Engine(*map(str, model_files), page_size=4, max_pages=32, max_sequences=4, host_pages=16,
                    disk_pages=4096, disk_directory=tmp_path / "kv", reclaim_pages=reclaim_pages)
    assert tiered.config["host_pages"] == 16 and tiered.config["disk_pages"] == 4096
    assert tiered.config["reclaim_pages"] == reclaim_pages
    from_host = from_disk = 0
    for _ in range(3):
        for p, want in zip(prompts, expected):
            r = tiered.generate(Request(prompt=p, max_tokens=60, sampling=SamplingParams(temperature=0)))
            assert r.tokens == want
            assert r.cached_from_host + r.cached_from_disk <= r.cached_prompt_tokens
            from_host += r.cached_from_host
            from_disk += r.cached_from_disk
    assert from_host > 0 and from_disk > 0
    assert tiered.stats()["cached_from_disk"] == from_disk
    # All at once: prompts whose pages come up in the background wait for them while the
    # others run, and still give the same tokens.
    handles = [tiered.generate_async(Request(prompt=p, max_tokens=60, sampling=SamplingParams(temperature=0)))
               for p in prompts]
    assert [h.result(timeout=60).tokens for h in handles] == expected
    stats = tiered.stats()
    assert (stats["reclaimed_pages"] > 0) == (reclaim_pages > 0)
    assert stats["reclaimed_pages"] <= stats["evicted_pages"]
    tiered.shutdown()
    assert any((tmp_path / "kv" / "blocks").iterdir())
    with pytest.raises(ValueError, match="offload_policy"):
        Engine(*map(str, model_files), host_pages=4, offload_policy="lazy")
    with pytest.raises(ValueError, match="reclaim_pages needs a host tier"):
        Engine(*map(str, model_files), reclaim_pages=4)
    with pytest.raises(ValueError, match="reclaim_pages"):
        Engine(*map(str, model_files), host_pages=4, reclaim_pages=-1)
    with pytest.raises(ValueError, match="disk_directory"):
        Engine(*map(str, model_files), disk_pages=4)
