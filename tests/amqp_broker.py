"""Acting on the shared test broker through ``rabbitmqctl``, only ever on what a test created itself."""

from __future__ import annotations

import asyncio
import re
import shlex

# A connection's client properties as rabbitmqctl prints them: [{"connection_name","..."},...]
_NAME = re.compile(r'\{"connection_name","((?:[^"\\]|\\.)*)"\}')


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {shlex.join(args)}: {err.decode(errors='replace')}")
    return out.decode(errors="replace")


async def connections_named(prefix: str) -> dict[str, str]:
    """Connection name -> broker pid, for the connections whose client-given name starts with ``prefix``."""
    out = await rabbitmqctl("list_connections", "--no-table-headers", "pid", "client_properties")
    found: dict[str, str] = {}
    for line in out.splitlines():
        pid, _, props = line.partition("\t")
        match = _NAME.search(props)
        if match and match.group(1).startswith(prefix):
            found[match.group(1)] = pid
    return found


async def close_connections_named(prefix: str, reason: str = "test: forced close") -> int:
    """Close (as a broker failure would) only the connections whose name starts with ``prefix``."""
    named = await connections_named(prefix)
    await asyncio.gather(*(rabbitmqctl("close_connection", pid, reason) for pid in named.values()))
    return len(named)
