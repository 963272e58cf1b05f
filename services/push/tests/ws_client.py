"""A push-edge device written with the Python `websockets` library.

usage: ws_client.py URL COUNT
Connects, prints every frame it receives as one JSON line, and exits after
COUNT push frames. A refused handshake prints `REFUSED <status>`.
"""
import asyncio
import json
import sys

import websockets


async def main(url: str, count: int) -> None:
    try:
        async with websockets.connect(url) as ws:
            pushes = 0
            while pushes < count:
                frame = json.loads(await ws.recv())
                print(json.dumps(frame), flush=True)
                if frame["type"] == "push":
                    pushes += 1
    except websockets.exceptions.InvalidStatus as e:
        print(f"REFUSED {e.response.status_code}", flush=True)


asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2])), 60))
