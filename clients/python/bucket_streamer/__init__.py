"""Exact frames of H.265 videos from a bucket-streamer server, as numpy arrays or PIL images."""

from .client import AsyncVideo, FrameError, Video

__all__ = ["AsyncVideo", "FrameError", "Video"]
