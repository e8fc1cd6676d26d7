"""Encoder batches: short samples share batches, and batch composition depends on the manifest only."""

from emotk.features.extract import make_packs, pack_batches


def test_short_samples_share_batches_long_ones_stand_alone():
    counts = [10, 20, 40, 100, 5, 3]
    packs = make_packs(counts, 64)
    assert packs == [[0, 1, 2], [3], [4, 5]]
    batches = pack_batches([sum(counts[s] for s in p) for p in packs], 64)
    assert [len(b) for b in batches] == [64, 6, 64, 36, 8]
    assert sum(len(b) for b in batches) == sum(counts)
    flat = [i for b in batches for i in b]
    assert flat == list(range(sum(counts)))  # every frame once, in order


def test_rank_sharding_keeps_pack_composition():
    counts = [30] * 10
    packs = make_packs(counts, 64)
    shards = [packs[r::2] for r in range(2)]
    assert sorted(p for shard in shards for p in shard) == sorted(packs)
