#!/usr/bin/env python3
"""A TCP proxy that adds round-trip time: every chunk of bytes, in either
direction, is delivered half the round trip after it arrived (order kept,
bandwidth untouched), like a bucket in another zone.

Usage: scripts/latency_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT RTT_MS
(`scripts/bench-latency` starts it in front of the S3 test server.)
"""

import asyncio
import sys


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    try:
        while chunk := await reader.read(1 << 16):
            loop.call_later(delay, writer.write, chunk)
        await asyncio.sleep(delay)
    except (ConnectionError, OSError):
        pass
    finally:
        loop.call_later(delay, writer.close)


async def main(listen_port, target, rtt_ms):
    host, port = target.rsplit(":", 1)
    delay = rtt_ms / 2000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.sleep(delay * 2)  # the connection's own handshake round trip
        await asyncio.gather(pipe(client_reader, server_writer, delay), pipe(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print(f"listening on {listen_port}, {rtt_ms} ms round trip to {target}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
