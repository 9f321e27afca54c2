"""Dynamic batching (worker/batching.py, issue 22): real threads calling real functions, no mocks.

The mechanism is tested with a small real function (a matrix product that records each call), and the
document embedding step with the real model: batched vectors equal the model's own one-at-a-time call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from aitasks.errors import JobCancelled
from aitasks.worker.batching import Batcher, batchable

WEIGHTS = np.random.default_rng(7).standard_normal((4, 3))


class Recorded:
    """``fn(items) -> results``: each item (a 4-vector) times a fixed matrix; records every call's size.
    ``gate``: when set, a call waits for it (to hold a batch running while others queue)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, items: list[np.ndarray]) -> Sequence[np.ndarray]:
        self.calls.append(len(items))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return list(np.stack(items) @ WEIGHTS)


def run_callers(batcher: Batcher[Any, Any], inputs: list[list[np.ndarray]],
                check: Callable[[int], Callable[[], None]] = lambda i: lambda: None) -> list[Any]:
    out: list[Any] = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def call(i: int) -> None:
        barrier.wait()
        try:
            out[i] = batcher.run(inputs[i], check(i))
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return out


def vectors(n: int, seed: int) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).standard_normal((n, 4)))


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    fn = Recorded()
    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=8, max_wait_ms=200, name="t1")
    inputs = [vectors(2, seed) for seed in range(6)]  # 12 items from 6 callers
    out = run_callers(batcher, inputs)
    for items, got in zip(inputs, out, strict=True):
        assert np.allclose(np.stack(got.results), np.stack(items) @ WEIGHTS)  # each its own, in order
    assert sum(fn.calls) == 12 and max(fn.calls) > 2, fn.calls  # batches across callers, none over max_batch
    assert max(fn.calls) <= 8
    assert batcher.stats.largest == max(fn.calls) and batcher.stats.items == 12
    assert max(o.largest_batch for o in out) == max(fn.calls)


def test_a_caller_larger_than_max_batch_is_split() -> None:
    fn = Recorded()
    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=4, max_wait_ms=0, name="t2")
    items = vectors(10, 1)
    reported: list[float] = []
    got = batcher.run(items, progress=reported.append)
    assert fn.calls == [4, 4, 2]
    assert reported == sorted(reported) and reported[-1] == 1.0  # the caller's own progress, as slices end
    assert np.allclose(np.stack(got.results), np.stack(items) @ WEIGHTS)


@pytest.mark.parametrize("workers", [1, 2])
def test_with_two_workers_two_batches_run_at_once_sharing_the_waiting_items(workers: int) -> None:
    """A threads worker's embedding step: one model call per core at once. 8 callers' items wait together;
    two idle threads take half each and run at the same time; one thread takes them all."""
    running, most = [0], [0]
    lock = threading.Lock()
    both_in = threading.Barrier(workers, timeout=5)
    fn_inner = Recorded()

    def fn(items: list[np.ndarray]) -> Sequence[np.ndarray]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        both_in.wait()  # (with two threads: returns only once both calls are running)
        try:
            return fn_inner(items)
        finally:
            with lock:
                running[0] -= 1

    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=8, max_wait_ms=2000, name=f"t-w{workers}",
                                                       workers=workers)
    inputs = [vectors(1, seed) for seed in range(8)]
    out = run_callers(batcher, inputs)
    for items, got in zip(inputs, out, strict=True):
        assert np.allclose(np.stack(got.results), np.stack(items) @ WEIGHTS)
    assert sorted(fn_inner.calls) == ([4, 4] if workers == 2 else [8]) and most[0] == workers, fn_inner.calls


def test_a_lone_participant_does_not_wait_for_company() -> None:
    """One job in the process (prefork): its batch runs at once, not after max_wait_ms."""
    fn = Recorded()
    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=32, max_wait_ms=5000, name="t3")
    with batcher.participant():
        started = time.monotonic()
        batcher.run(vectors(3, 2))
        assert time.monotonic() - started < 2.0


def test_a_batch_waits_for_an_announced_participant_up_to_max_wait() -> None:
    fn = Recorded()
    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=32, max_wait_ms=3000, name="t4")
    late_done = threading.Event()

    def late() -> None:
        with batcher.participant():
            time.sleep(0.3)  # reading its document while the other already waits
            batcher.run(vectors(2, 4))
            late_done.set()

    with batcher.participant():
        t = threading.Thread(target=late)
        t.start()
        time.sleep(0.05)
        got = batcher.run(vectors(3, 3))
    t.join(10)
    assert late_done.is_set() and fn.calls == [5] and got.largest_batch == 5


def test_a_cancelled_caller_is_withdrawn_and_the_others_are_served() -> None:
    gate = threading.Event()
    fn = Recorded(gate)
    batcher: Batcher[np.ndarray, np.ndarray] = Batcher(fn, max_batch=4, max_wait_ms=0, name="t5")
    first: list[Any] = []
    holder = threading.Thread(target=lambda: first.append(batcher.run(vectors(4, 5))))
    holder.start()
    assert fn.started.wait(5)  # a full batch is running; the next callers' items wait behind it
    cancel = threading.Event()

    def check(i: int) -> Callable[[], None]:
        def raise_if_cancelled() -> None:
            if i == 0 and cancel.is_set():
                raise JobCancelled("cancelled")
        return raise_if_cancelled

    inputs = [vectors(3, 6), vectors(2, 7)]
    results: list[Any] = []
    callers = threading.Thread(target=lambda: results.extend(run_callers(batcher, inputs, check)))
    callers.start()
    time.sleep(0.3)
    cancel.set()
    time.sleep(0.3)  # the cancelled caller notices (it polls every 0.1 s) while the batch still runs
    gate.set()
    callers.join(10)
    holder.join(10)
    assert isinstance(results[0], JobCancelled)
    assert np.allclose(np.stack(results[1].results), np.stack(inputs[1]) @ WEIGHTS)
    assert fn.calls == [4, 2], fn.calls  # the cancelled caller's 3 items were never computed
    assert batcher.stats.withdrawn == 3


def test_an_error_in_a_batch_fails_only_the_caller_whose_items_fail_and_the_step_goes_on() -> None:
    calls: list[int] = []

    def fragile(items: list[int]) -> list[int]:
        calls.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(fragile, max_batch=8, max_wait_ms=300, name="t6")
    out = run_callers(batcher, [[1, 2], [-1], [3]])  # one batch of all three callers
    assert calls[0] == 4 and sorted(calls[1:]) == [1, 1, 2], calls  # then each caller's items alone
    assert isinstance(out[1], ValueError)
    assert out[0].results == [2, 4] and out[2].results == [6]
    assert batcher.run([5, 6]).results == [10, 12]


def test_batchable_declares_a_step_with_a_plain_call_too() -> None:
    @batchable("test-doubling", max_batch=3, max_wait_ms=0)
    def doubling(items: list[int]) -> list[int]:
        return [i * 2 for i in items]

    assert doubling([1, 2]) == [2, 4]  # the unbatched call
    assert doubling.run([1, 2, 3, 4]).results == [2, 4, 6, 8]
    assert doubling.batcher().stats.sizes == {3: 1, 1: 1}
    with pytest.raises(ValueError, match="declared twice"):
        batchable("test-doubling")(lambda items: items)
    with pytest.raises(ValueError):
        batchable("test-bad", max_batch=0)


@pytest.mark.slow
def test_batched_embeddings_equal_the_models_one_at_a_time_call() -> None:
    """The real model: chunks of 6 concurrent 'jobs' embedded together give the vectors each job's own
    call gives (float tolerance), and they did ride in shared batches."""
    from aitasks.documents.batched import BatchedEncode, embed_chunks
    from aitasks.documents.embedding import load_embedder
    from test_documents_pipeline import BEES, EXPENSES, LIGHTHOUSE, SOURDOUGH

    embedder = load_embedder()
    texts = [list(BEES), list(EXPENSES), list(LIGHTHOUSE), [p for p in SOURDOUGH.split("\n\n") if p.strip()]]
    texts += [["A short note about tides."], ["Lighthouses were automated in the 1980s.", "Keepers left."]]
    expected = [embedder.encode(t) for t in texts]
    before = embed_chunks.batcher().stats.largest
    got: list[Any] = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def job(i: int) -> None:
        with BatchedEncode() as encode:
            barrier.wait()
            got[i] = (encode(texts[i], lambda: None), encode.largest_batch)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for (vecs, _), want in zip(got, expected, strict=True):
        assert vecs.shape == want.shape and np.allclose(vecs, want, atol=1e-5)
    assert max(size for _, size in got) > 1 and embed_chunks.batcher().stats.largest >= max(before, 2)


def test_max_batch_may_come_from_a_setting_read_at_first_use() -> None:
    size = {"n": 2}

    @batchable("test-from-setting", max_batch=lambda: size["n"], max_wait_ms=0)
    def identity(items: list[int]) -> list[int]:
        return items

    size["n"] = 3  # read when the process first uses the step, not at declaration
    assert identity.run([1, 2, 3, 4, 5]).results == [1, 2, 3, 4, 5]
    assert identity.batcher().stats.sizes == {3: 1, 2: 1}
