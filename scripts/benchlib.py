"""What the scale-out and capacity benchmark scripts share: fresh release
server processes on free loopback ports, the `bench` client, /metrics."""

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target/release/bucket-streamer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()


class Server:
    """A fresh release server over `root` on `port` (a free one by default),
    on the CPUs listed in `cpus` (taskset's list; all by default)."""

    def __init__(self, root, *extra, port=None, name="server", cpus=None):
        self.port, self.name = port or free_port(), name
        self.process = subprocess.Popen(
            [*pinned(cpus), BINARY, "serve", "--local-path", root, "--listen-addr", f"127.0.0.1:{self.port}",
             "--log-level", "warn", "--instance-id", name, "--drain-secs", "5", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                get(self.port, "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not start")

    def metrics(self):
        try:
            return get(self.port, "/metrics")
        except OSError:
            return ""

    def metric(self, name):
        """Sum of `name` over its labels (0 when absent)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))

    def rss_mb(self):
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024

    def stop(self, sig=None):
        if sig is None:
            self.process.terminate()
        else:
            self.process.send_signal(sig)
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def pinned(cpus):
    """The command prefix that runs a process on `cpus` only (none for all)."""
    return ["taskset", "-c", cpus] if cpus else []


def bench(port, videos, clients, *extra, cpus=None):
    """`bucket-streamer bench --json` against the server or proxy on `port`."""
    args = [*pinned(cpus), BINARY, "bench", "--url", f"ws://127.0.0.1:{port}/ws", "--json", "--clients", str(clients), *extra]
    for video in videos:
        args += ["--video", video]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def make_long_720(videos, shared, scratch):
    """A 1-hour 720p MP4 in `videos` (bbb720-frag.mp4 repeated 360 times, remuxed), made once."""
    long = videos / "long720.mp4"
    if long.exists():
        return long
    print("making a 1-hour 720p MP4 (bbb720-frag.mp4 repeated 360 times, remuxed)", flush=True)
    quiet = {"check": True, "capture_output": True}
    raw, joined = scratch / "bbb720.265", scratch / "long720.265"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", shared / "bbb720-frag.mp4", "-c", "copy", "-bsf:v",
                    "hevc_mp4toannexb", "-f", "hevc", raw], **quiet)
    with open(joined, "wb") as out:
        chunk = raw.read_bytes()
        for _ in range(360):
            out.write(chunk)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-r", "25", "-i", joined, "-c", "copy", "-tag:v", "hvc1", long],
                   **quiet)
    joined.unlink()
    return long


def write_section(begin, end, lines):
    """Replaces (or appends) the section between `begin` and `end` in docs/benchmarks.md."""
    report = ROOT / "docs/benchmarks.md"
    text = report.read_text()
    section = "\n".join([begin, *lines, end])
    if begin in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    report.write_text(text)
    print(section)
