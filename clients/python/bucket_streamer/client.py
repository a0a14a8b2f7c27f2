"""Frames of one video from a bucket-streamer server (docs/protocol.md).

`AsyncVideo` reads the video's index over HTTP, then asks for frames over one
WebSocket, many requests in flight at once (pipelined), and decodes the
answers on a thread pool while more arrive. `Video` is the same behind a
synchronous API: its own event loop runs on a thread of its own.
"""

import asyncio
import io
import json
import mmap
import os
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import websockets
from PIL import Image

# Frames per RequestFrames message, and frames asked for but not yet answered.
_CHUNK = 8
_IN_FLIGHT = 32


class FrameError(Exception):
    """The server could not serve a frame: `code` is its stable error code."""

    def __init__(self, frame, code, message):
        super().__init__(f"frame {frame}: {message} ({code})")
        self.frame, self.code = frame, code


class AsyncVideo:
    """One video on a server, for asyncio. Open with `await AsyncVideo.open(...)`."""

    def __init__(self, url, path, *, token=None, width=None, height=None, format="png", quality=None,
                 as_pil=False, timeout=60):
        self.url, self.path, self.token, self.timeout, self.as_pil = url.rstrip("/"), path, token, timeout, as_pil
        self.output = {key: value for key, value in
                       {"width": width, "height": height, "format": format, "quality": quality}.items()
                       if value is not None}
        self.index = None
        self._socket = None
        self._lock = asyncio.Lock()
        self._decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        _keep_pillow_blocks(2 * (os.cpu_count() or 2) + 2)

    @classmethod
    async def open(cls, url, path, **options):
        video = cls(url, path, **options)
        await video.connect()
        return video

    async def connect(self):
        """Reads the index and opens the session (`/ws?video=`, the key a load balancer routes by)."""
        if self.index is None:
            self.index = await asyncio.to_thread(self._fetch_index)
        query = {"video": self.path}
        if self.token:
            query["access_token"] = self.token
        scheme = "wss" if self.url.startswith("https") else "ws"
        address = f"{scheme}{self.url[self.url.index(':'):]}/ws?{urllib.parse.urlencode(query)}"
        self._socket = await websockets.connect(address, max_size=None, open_timeout=self.timeout)
        reply = json.loads(await asyncio.wait_for(self._socket.recv(), self.timeout))
        if reply.get("type") != "VideoSet" or not reply.get("ok"):
            raise ConnectionError(f"the server cannot open {self.path}: {reply.get('error', reply)}")

    def _fetch_index(self):
        request = urllib.request.Request(f"{self.url}/api/v1/index?{urllib.parse.urlencode({'video': self.path})}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.load(response)

    async def close(self):
        if self._socket is not None:
            await self._socket.close()
        self._decoders.shutdown(wait=False)

    async def __aenter__(self):
        if self._socket is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __len__(self):
        return len(self.index["frames"])

    @property
    def width(self):
        return self.index["width"]

    @property
    def height(self):
        return self.index["height"]

    async def get(self, frame):
        """Frame `frame` (negative counts from the end)."""
        return (await self.get_many([frame]))[0]

    async def get_many(self, frames):
        """The frames numbered in `frames`, in that order (a list of arrays or images)."""
        return await self._get(frames, lambda data, _slot: self._decode(data))

    async def get_array(self, frames):
        """The frames numbered in `frames` stacked in one N x H x W x 3 array.
        Each is decoded straight into its place as it arrives: stacking after
        the last one took longer than fetching and decoding them all."""
        stack = _Stack(len(frames))
        await self._get(frames, lambda data, slot: stack.put(slot, self._decode(data)))
        return stack.array

    async def _get(self, frames, decode):
        frames = [self._number(n) for n in frames]
        async with self._lock:  # one pipeline on the session at a time
            if self._socket is None:
                await self.connect()
            try:
                return await self._fetch(frames, decode)
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                # The session's state is unknown: the next call opens a new one.
                socket, self._socket = self._socket, None
                await socket.close()
                raise

    def _number(self, n):
        count = len(self)
        n = int(n)
        if not -count <= n < count:
            raise IndexError(f"frame {n} is outside the video's {count} frames")
        return n % count

    async def _fetch(self, frames, decode):
        loop = asyncio.get_running_loop()
        results = [None] * len(frames)
        failure = None
        sent = answered = 0
        while answered < sent or (failure is None and sent < len(frames)):
            # After a failure nothing more is asked; what is in flight is read
            # off the session so the next call starts clean.
            while failure is None and sent < len(frames) and sent - answered < _IN_FLIGHT:
                chunk = range(sent, min(sent + _CHUNK, len(frames)))
                await self._socket.send(json.dumps(self._request(frames, chunk)))
                sent = chunk.stop
            header = json.loads(await asyncio.wait_for(self._socket.recv(), self.timeout))
            slot = header.get("index")
            if not isinstance(slot, int) or not 0 <= slot < len(frames) or results[slot] is not None:
                raise ConnectionError(f"an answer for a frame not asked for: {header}")
            if header.get("type") == "Frame":
                data = await asyncio.wait_for(self._socket.recv(), self.timeout)
                results[slot] = loop.run_in_executor(self._decoders, decode, data, slot)
            elif header.get("type") == "FrameError":
                results[slot] = False
                failure = failure or FrameError(frames[slot], header.get("error"), header.get("message"))
            else:
                raise ConnectionError(f"unexpected message from the server: {header}")
            answered += 1
        if failure is not None:
            for pending in results:
                if isinstance(pending, asyncio.Future):
                    pending.cancel()
            raise failure
        return list(await asyncio.gather(*results))

    def _request(self, frames, chunk):
        entries = []
        for slot in chunk:
            frame = self.index["frames"][frames[slot]]
            entries.append({"offset": frame["offset"], "irap_offset": frame["irap_offset"], "index": slot})
        return {"type": "RequestFrames", "output": self.output, "frames": entries}

    def _decode(self, data):
        image = Image.open(io.BytesIO(data))
        image = image.convert("RGB") if image.mode != "RGB" else image
        if self.as_pil:
            image.load()
            return image
        return np.asarray(image)


class Video:
    """One video on a server, synchronously: `len(video)`, `video.index`,
    `video[i]`, `video[a:b]`, `video[[i, j, k]]`. Several frames come back
    stacked (N x H x W x 3) as numpy, or as a list of PIL images."""

    def __init__(self, url, path, **options):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bucket-streamer", daemon=True)
        self._thread.start()
        try:
            self._video = self._run(AsyncVideo.open(url, path, **options))
        except BaseException:
            self._stop_loop()  # a refused or failed open leaves no thread behind
            raise

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __len__(self):
        return len(self._video)

    @property
    def index(self):
        return self._video.index

    @property
    def width(self):
        return self._video.width

    @property
    def height(self):
        return self._video.height

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._many(range(*key.indices(len(self))))
        if isinstance(key, (list, tuple, np.ndarray)):
            return self._many(list(key))
        return self._run(self._video.get(key))

    def _many(self, frames):
        if self._video.as_pil:
            return self._run(self._video.get_many(list(frames)))
        return self._run(self._video.get_array(list(frames)))

    def close(self):
        self._run(self._video.close())
        self._stop_loop()

    def _stop_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Stack:
    """N frames in one array, made when the first is decoded (its size is
    the output's, which the server decides)."""

    def __init__(self, count):
        self.count, self.array = count, np.empty((0, 0, 0, 3), dtype=np.uint8)
        self._lock = threading.Lock()

    def put(self, slot, picture):
        with self._lock:
            if self.array.shape[0] != self.count:
                self.array = _large_array((self.count, *picture.shape))
        if self.array.shape[1:] != picture.shape:
            raise ValueError(f"frame {slot} is {picture.shape}, the first was {self.array.shape[1:]}")
        self.array[slot] = picture


def _large_array(shape):
    """An empty uint8 array; a large one on Linux in transparent huge pages:
    first touching a 200-frame 1080p stack cost 14 ms a frame in 4 KiB pages
    on a VM, 4 ms in huge pages (numpy does not ask for them here)."""
    size = int(np.prod(shape))
    if size < 1 << 22 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype=np.uint8)
    memory = mmap.mmap(-1, size)
    memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype=np.uint8).reshape(shape)


def _keep_pillow_blocks(count):
    """Lets Pillow reuse the memory of decoded images (its block cache is
    off by default: every frame's 8 MB came fresh from the kernel, 10 ms of
    a 1080p JPEG's 15 ms here). Only ever raised, as the setting is Pillow's,
    process-wide (`PILLOW_BLOCKS_MAX`)."""
    if Image.core.get_blocks_max() < count:
        Image.core.set_blocks_max(count)
