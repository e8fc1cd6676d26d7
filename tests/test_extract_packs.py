"""Encoder batches: short samples share batches, and batch composition depends on the manifest only.

Expected packs and batches are worked out by hand from the rule in emotk.features.extract's
docstring: consecutive samples are packed until a pack holds at least one batch of frames; batches
are cut from each pack's first frame; rank r of N takes packs r, r + N, …
"""

from emotk.features.extract import make_packs, pack_batches, shard_packs


def test_short_samples_share_batches_long_ones_stand_alone():
    counts = [10, 20, 40, 100, 5, 3]
    packs = make_packs(counts, 64)
    assert packs == [[0, 1, 2], [3], [4, 5]]
    batches = pack_batches([sum(counts[s] for s in p) for p in packs], 64)
    assert [len(b) for b in batches] == [64, 6, 64, 36, 8]
    assert sum(len(b) for b in batches) == sum(counts)
    flat = [i for b in batches for i in b]
    assert flat == list(range(sum(counts)))  # every frame once, in order


def test_rank_sharding_by_hand():
    # samples of 10, 60, 5, 70, 3, 3, 64 frames, batches of 64:
    # 10 + 60 = 70 >= 64 → pack [0, 1]; 5 + 70 = 75 → [2, 3]; 3 + 3 + 64 = 70 → [4, 5, 6]
    counts = [10, 60, 5, 70, 3, 3, 64]
    assert shard_packs(counts, 64, 0, 1) == [[0, 1], [2, 3], [4, 5, 6]]
    assert shard_packs(counts, 64, 0, 2) == [[0, 1], [4, 5, 6]]
    assert shard_packs(counts, 64, 1, 2) == [[2, 3]]
    assert [shard_packs(counts, 64, r, 3) for r in range(3)] == [[[0, 1]], [[2, 3]], [[4, 5, 6]]]
    assert shard_packs(counts, 64, 3, 4) == []  # more processes than packs: the last one has nothing


def test_a_frame_is_encoded_with_the_same_batch_neighbours_on_any_rank():
    counts = [10, 60, 5, 70, 3, 3, 64]
    # one process: pack sizes 70, 75, 70 → batches of 64 + 6, 64 + 11, 64 + 6 frames
    one = pack_batches([70, 75, 70], 64)
    assert [len(b) for b in one] == [64, 6, 64, 11, 64, 6]
    # rank 0 of 2 encodes packs [0, 1] and [4, 5, 6]: sizes 70 and 70 → batches 64, 6, 64, 6, the
    # same frames together as the single process's batches 1, 2, 5, 6
    packs = shard_packs(counts, 64, 0, 2)
    sizes = [sum(counts[s] for s in p) for p in packs]
    assert sizes == [70, 70]
    assert [len(b) for b in pack_batches(sizes, 64)] == [64, 6, 64, 6]
    assert pack_batches(sizes, 64)[2] == list(range(70, 134))  # pack [4, 5, 6] starts a batch on its first frame
