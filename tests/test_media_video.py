"""Video decoding on real files: mp4/avi, VFR, over-reported frame counts, truncated and garbage files."""

from __future__ import annotations

import numpy as np
import pytest

from emotk.errors import EmotkError
from emotk.media.video import MediaError, VideoStream, available_decoders, decord_available, iter_frames, probe
from media_factory import (
    face_frames,
    write_garbage,
    write_no_frames_mp4,
    write_overreported_avi,
    write_overreported_mp4,
    write_truncated_mp4,
    write_vfr_mp4,
    write_video,
)

DECODERS = ["auto", "av"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames, _ = face_frames(30, w=160, h=120, size=60)
    long_frames, _ = face_frames(60, w=160, h=120, size=60)
    return {
        "frames": frames,
        "mp4": write_video(d / "a.mp4", frames),
        "avi": write_video(d / "a.avi", frames),
        "bframes": write_video(d / "b.mp4", frames, bframes=2),
        "vfr": write_vfr_mp4(d / "vfr.mp4", frames),
        "over_mp4": write_overreported_mp4(d / "over.mp4", frames, extra=20),
        "over_mp4_aud": write_overreported_mp4(d / "over_aud.mp4", frames, extra=20, payload="aud"),
        "over_avi": write_overreported_avi(d / "over.avi", frames, claimed=300),
        "truncated": write_truncated_mp4(d / "trunc.mp4", long_frames, keep=0.6),
        "garbage": write_garbage(d / "garbage.mp4"),
        "empty": _touch(d / "empty.avi"),
        "no_frames": write_no_frames_mp4(d / "noframes.mp4"),
    }


def _touch(p):
    p.write_bytes(b"")
    return p


@pytest.mark.parametrize("kind", ["mp4", "avi", "bframes"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_decodes_every_frame_in_order(videos, kind, decoder):
    s = VideoStream(videos[kind], decoder=decoder)
    got = list(s)
    assert [i for i, _ in got] == list(range(30))
    assert got[0][1].shape == (120, 160, 3) and got[0][1].dtype == np.uint8
    # lossy codec, but frame k decodes close to source frame k (order, no off-by-one)
    for k in (0, 13, 29):
        err = np.abs(got[k][1].astype(int) - videos["frames"][k].astype(int)).mean()
        others = np.abs(got[k][1].astype(int) - videos["frames"][(k + 10) % 30].astype(int)).mean()
        assert err < others
    assert s.n_decoded == 30 and s.error is None and s.fps == pytest.approx(25.0)
    assert s.decoder_used == ("decord" if decoder == "auto" and decord_available() else "av")


def test_every_and_size(videos):
    got = list(iter_frames(videos["mp4"], every=7, size=(80, 64)))
    assert [i for i, _ in got] == [0, 7, 14, 21, 28]
    assert all(f.shape == (64, 80, 3) for _, f in got)
    got_av = list(iter_frames(videos["mp4"], every=7, size=(80, 64), decoder="av"))
    assert [i for i, _ in got_av] == [0, 7, 14, 21, 28] and got_av[0][1].shape == (64, 80, 3)


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate(videos, decoder):
    s = VideoStream(videos["vfr"], decoder=decoder)
    assert len(list(s)) == 30  # indexed by decode order, nothing dropped or duplicated
    assert 10 < s.fps < 25  # the average rate of 80/40 ms frames


@pytest.mark.skipif(not decord_available(), reason="decord not installed")
def test_overreported_mp4_is_a_real_trap_for_decord(videos):
    import decord

    vr = decord.VideoReader(str(videos["over_mp4"]))
    assert len(vr) == 50  # the container lists 50 samples; only 30 decode
    n = 0
    while True:  # left alone, decord pads the tail with copies of the last frame
        try:
            vr.next()
            n += 1
        except StopIteration:
            break
    assert n == 50


@pytest.mark.parametrize("decoder", DECODERS)
def test_overreported_mp4_yields_only_real_frames(videos, decoder):
    s = VideoStream(videos["over_mp4"], decoder=decoder)
    frames = list(s)
    assert len(frames) == 30 and s.n_decoded == 30
    assert s.n_frames_reported == 50
    assert s.error is None
    assert any("50" in n and "30" in n for n in s.notes)
    assert not np.array_equal(frames[-1][1], frames[-2][1])
    if decoder == "auto" and decord_available():
        assert s.decoder_used == "decord" and any("PyAV confirms" in n for n in s.notes)


@pytest.mark.parametrize("decoder", DECODERS)
def test_decord_error_mid_file_continues_with_pyav(videos, decoder):
    s = VideoStream(videos["over_mp4_aud"], decoder=decoder)
    frames = list(s)
    assert [i for i, _ in frames] == list(range(30))
    if decoder == "auto" and decord_available():
        assert s.decoder_used == "decord+av"  # decord stopped a few frames early, PyAV read the rest
        assert any("PyAV decoded frames" in n for n in s.notes)
        ref = list(VideoStream(videos["over_mp4_aud"], decoder="av"))
        assert all(np.abs(a.astype(int) - b.astype(int)).mean() < 2 for (_, a), (_, b) in zip(frames, ref))


@pytest.mark.parametrize("decoder", DECODERS)
def test_overreported_avi_header(videos, decoder):
    s = VideoStream(videos["over_avi"], decoder=decoder)
    assert len(list(s)) == 30
    info = probe(videos["over_avi"], decoder=decoder)
    assert info.width == 160 and info.height == 120 and info.fps == pytest.approx(25.0)
    if decoder == "av":
        assert info.n_frames_reported == 300 and s.n_frames_reported == 300  # the header lies
        assert any("300" in n for n in s.notes)


@pytest.mark.parametrize("decoder", DECODERS)
def test_truncated_video_keeps_what_decoded_and_says_why(videos, decoder):
    s = VideoStream(videos["truncated"], decoder=decoder)
    frames = list(s)
    assert 20 < len(frames) < 60  # the frames before the cut, all of them
    assert [i for i, _ in frames] == list(range(len(frames)))
    assert s.n_frames_reported > len(frames)
    assert any(n.startswith(f"container reports {s.n_frames_reported} frames, {len(frames)} decoded") for n in s.notes)
    if decoder == "auto":  # whichever decoder(s) read it, the same frames come out as with PyAV alone
        assert len(frames) == len(list(VideoStream(videos["truncated"], decoder="av")))


@pytest.mark.parametrize("kind", ["garbage", "empty", "no_frames"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_unreadable_files_raise_a_clear_error(videos, kind, decoder):
    path = videos[kind]
    with pytest.raises(MediaError) as ei:
        list(VideoStream(path, decoder=decoder))
    msg = str(ei.value)
    assert path.name in msg and "re-encode" in msg
    assert "Traceback" not in msg and "github/workspace" not in msg
    assert isinstance(ei.value, EmotkError)


def test_probe(videos):
    info = probe(videos["mp4"])
    assert (info.n_frames_reported, info.width, info.height) == (30, 160, 120)
    assert info.decoder == available_decoders()[0]
    with pytest.raises(MediaError, match="garbage.mp4"):
        probe(videos["garbage"])
    with pytest.raises(MediaError, match="does not exist"):
        probe(videos["mp4"].with_name("missing.mp4"))


def test_bad_decoder_name(videos):
    with pytest.raises(MediaError, match="unknown video decoder"):
        VideoStream(videos["mp4"], decoder="ffmpeg")


def test_without_decord_everything_goes_through_pyav(videos, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "decord", None)  # as on a platform without a decord wheel
    assert not decord_available() and available_decoders() == ["av"]
    s = VideoStream(videos["over_mp4"])
    assert len(list(s)) == 30 and s.decoder_used == "av"
    assert probe(videos["mp4"]).decoder == "av"
    with pytest.raises(MediaError, match="pip install decord"):
        VideoStream(videos["mp4"], decoder="decord")
