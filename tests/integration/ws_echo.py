"""A tiny websocket echo server for the tunnel tests (the fake upstream has no websocket).

On connect it first sends one JSON text message describing the handshake it
saw (path, query, headers, negotiated subprotocol), then echoes every text and
binary message back until the client closes.
"""

from __future__ import annotations

from aiohttp import web


async def echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.json_response({"path": request.path, "websocket": False})
    ws = web.WebSocketResponse(protocols=("comfy", "other"))
    await ws.prepare(request)
    await ws.send_json(
        {
            "path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "protocol": ws.ws_protocol,
        }
    )
    async for message in ws:
        if message.type is web.WSMsgType.TEXT:
            if message.data == "close-me":
                await ws.close(code=4001)
                break
            await ws.send_str(message.data)
        elif message.type is web.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def build_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


if __name__ == "__main__":  # a child process standing in for ComfyUI: --port N
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(build_echo_app(), host="127.0.0.1", port=parser.parse_args().port, print=None)
