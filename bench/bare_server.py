"""The baseline: a bare aiohttp handler that reads the body and answers 200, on the same loop as receiver."""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"code":0}', content_type="application/json")


def main() -> None:
    port = int(sys.argv[1])
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/v1/notifications", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handler_cancellation=False)


if __name__ == "__main__":
    main()
