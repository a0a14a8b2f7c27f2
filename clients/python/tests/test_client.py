"""The Python client against a real server (started by the Rust test
`crates/cli/tests/python_client.rs`, which passes it in the environment):
frames by number, slices and lists, PNG compared with FFmpeg's own RGB
decode, JPEG scaled, PIL images, asyncio, errors that leave the session
usable, and (against a server that asks for one) the token."""

import asyncio
import os
import subprocess
import urllib.error

import numpy as np
import pytest

from bucket_streamer import AsyncVideo, FrameError, Video
from bucket_streamer.client import _Stack

LOSSLESS_PSNR = 45.0


def videos():
    """(key, file, matrix, range) of each video the server holds."""
    listed = os.environ.get("BUCKET_STREAMER_VIDEOS")
    if not listed:
        raise RuntimeError("run through crates/cli/tests/python_client.rs: BUCKET_STREAMER_VIDEOS is not set")
    return [tuple(entry.split("|")) for entry in listed.split(";")]


URL = os.environ.get("BUCKET_STREAMER_URL", "")
TOKEN = os.environ.get("BUCKET_STREAMER_TOKEN")


def reference(path, matrix, colour_range, width, height):
    """Every frame as FFmpeg decodes it to RGB with the stream's matrix and range."""
    flt = (f"scale=in_color_matrix={matrix}:in_range={colour_range}:out_range=pc:"
           "flags=accurate_rnd+full_chroma_int,format=rgb24")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-vf", flt, "-f", "rawvideo", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def psnr(a, b):
    mse = np.mean((a.astype(np.int32) - b.astype(np.int32)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("key,path,matrix,colour_range", videos())
def test_frames_by_number_slice_and_list_are_ffmpeg_s_rgb(key, path, matrix, colour_range):
    with Video(URL, key) as video:
        frames = reference(path, matrix, colour_range, video.width, video.height)
        assert len(video) == len(frames)
        assert video.index["frames"][0]["index"] == 0
        for n in [0, 13, len(video) - 1, -2]:
            picture = video[n]
            assert picture.shape == (video.height, video.width, 3) and picture.dtype == np.uint8
            assert psnr(picture, frames[n]) >= LOSSLESS_PSNR, f"{key} frame {n}"
        run = video[10:16]
        assert run.shape == (6, video.height, video.width, 3)
        for offset, picture in enumerate(run):
            assert psnr(picture, frames[10 + offset]) >= LOSSLESS_PSNR
        picked = video[[40, 2, 40, 7]]
        for n, picture in zip([40, 2, 40, 7], picked):
            assert psnr(picture, frames[n]) >= LOSSLESS_PSNR
        # Pipelined: more frames than are ever in flight at once.
        many = video[0:len(video)]
        assert all(psnr(p, f) >= LOSSLESS_PSNR for p, f in zip(many, frames))
        with pytest.raises(IndexError):
            video[len(video)]


def test_scaled_jpeg_pil_images_and_errors_that_leave_the_session_usable():
    key, path, matrix, colour_range = videos()[0]
    with Video(URL, key, width=320, format="jpeg", quality=90) as small:
        picture = small[3]
        assert picture.shape == (180, 320, 3)
    with Video(URL, key, as_pil=True) as video:
        image = video[5]
        assert image.size == (video.width, video.height) and image.mode == "RGB"
        frames = reference(path, matrix, colour_range, video.width, video.height)
        assert psnr(np.asarray(image), frames[5]) >= LOSSLESS_PSNR
    with Video(URL, key, quality=50) as refused:  # quality does not apply to PNG
        with pytest.raises(FrameError) as error:
            refused[0:12]
        assert error.value.code == "invalid_request"
        # Every answer of the refused run was read off: the session still serves.
        refused._video.output = {"format": "png"}
        assert refused[1].shape[2] == 3


def test_asyncio_gets_the_same_frames():
    key, _, _, _ = videos()[0]

    async def fetch():
        async with await AsyncVideo.open(URL, key) as video:
            return await video.get_many([3, 4, 5]), await video.get(4), await video.get_array([3, 4, 5])

    many, one, stacked = asyncio.run(fetch())
    assert np.array_equal(many[1], one)
    assert stacked.shape == (3, *one.shape) and np.array_equal(stacked, np.stack(many))


def test_a_frame_whose_size_differs_from_the_first_is_refused_not_stacked():
    stack = _Stack(3)
    stack.put(1, np.ones((4, 6, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="frame 2 is"):
        stack.put(2, np.ones((6, 4, 3), dtype=np.uint8))  # a server answering another size
    stack.put(0, np.zeros((4, 6, 3), dtype=np.uint8))
    assert stack.array.shape == (3, 4, 6, 3) and stack.array[1].all() and not stack.array[0].any()


@pytest.mark.skipif(not TOKEN, reason="this server asks for no token (python_client.rs runs one that does)")
def test_the_token_opens_the_index_and_the_session():
    key, path, matrix, colour_range = videos()[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        Video(URL, key)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        Video(URL, key, token=os.environ["BUCKET_STREAMER_OTHER_TOKEN"])  # a token for another prefix
    assert elsewhere.value.code == 403
    # The index over HTTP (bearer header) and the frames over the WebSocket (access_token).
    with Video(URL, key, token=TOKEN) as video:
        frames = reference(path, matrix, colour_range, video.width, video.height)
        assert psnr(video[2], frames[2]) >= LOSSLESS_PSNR
        assert all(psnr(p, f) >= LOSSLESS_PSNR for p, f in zip(video[0:10], frames))
