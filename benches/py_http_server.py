"""An asyncio HTTP/1.1 server (keep-alive, no framework) for the Python cost benchmark: each
request runs a few microseconds of Python 30 calls deep; every STALL_EVERY-th request (default
200) spins STALL_MS (default 60) at the bottom of that chain, so the watchdog walks a deep Python
stack a dozen times per stall. Prints "listening <port>"."""
import asyncio
import os
import time

STALL_EVERY = int(os.environ.get("STALL_EVERY", "4000"))
STALL_MS = float(os.environ.get("STALL_MS", "60"))
BODY = b'{"ok":true}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
served = 0


def chain(depth, stall):
    if depth:
        return chain(depth - 1, stall) + 1
    if stall:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < STALL_MS / 1000:
            pass
    return 0


async def handle(reader, writer):
    global served
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            served += 1
            chain(30, served % STALL_EVERY == 0)
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("listening %d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
