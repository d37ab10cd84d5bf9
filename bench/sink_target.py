"""A sink target for the benchmarks: accepts webhook POSTs, records (event_id, received_at,
session_id, arrival).

Writes the records as JSON lines to the file in argv[2] when it gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
import uvloop
from aiohttp import web


async def main(port: int, out: str) -> None:
    arrivals: list[tuple[str, str, str | None, float]] = []

    async def hook(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.time()
        for doc in body if isinstance(body, list) else [body]:  # a batch is a JSON array
            arrivals.append((doc["event_id"], doc["received_at"], doc.get("session_id"), now))
        return web.Response(status=204)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    lines = [
        orjson.dumps({"event_id": e, "received_at": r, "session_id": s, "arrival": a}) + b"\n"
        for e, r, s, a in arrivals
    ]
    await asyncio.to_thread(Path(out).write_bytes, b"".join(lines))


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
