"""How `streams.pipe` groups chunks into writes: by count and by size, in order, one chunk at least."""

from __future__ import annotations

from outlast import _streams


def test_batches_keep_order_and_stay_under_the_size():
    pending = ["x" * 400_000 for _ in range(5)] + [{"n": i} for i in range(1000)]
    batches = []
    while pending:
        batches.append(_streams._take_batch(pending))
    assert [len(b) for b in batches[:2]] == [3, 500]  # 1.2 MB at the third big chunk; then the count
    assert [chunk for batch in batches for chunk in batch] == ["x" * 400_000] * 5 + [{"n": i} for i in range(1000)]
    assert max(len(b) for b in batches) == _streams.PIPE_BATCH


def test_one_chunk_over_the_size_goes_alone():
    pending = ["y" * 5_000_000, "z"]
    assert _streams._take_batch(pending) == ["y" * 5_000_000]
    assert pending == ["z"]
