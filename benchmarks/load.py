"""A bounded HTTP load generator for 127.0.0.1, light enough to share two cores with a server.

Each of N clients keeps one keep-alive connection and sends the same
pre-encoded request again as soon as the previous answer arrives (a closed
loop, like `wrk`). Requests are raw HTTP/1.1 bytes over asyncio streams: a
general client such as httpx spends around a millisecond of CPU per request in
Python, which on a 2-core machine would be taken from the server it measures.

Bounded in time and count: answers that arrive in the `duration` seconds after
`warmup` (or until `max_requests` of them) are counted, like `wrk` counts
them; requests still out when the window closes get `drain` seconds to finish
and are then dropped. Only loopback addresses are accepted.

    python -m benchmarks.load --port 8000 --path /search --body body.bin \
        --content-type 'multipart/form-data; boundary=x' --clients 16 --duration 10

Prints one JSON object: requests/s, latency percentiles in ms, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNIQUE = b"@@UNIQUE@@"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str = ""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" not in headers:
        raise RuntimeError(f"response without Content-Length: {lines[0]}")
    await reader.readexactly(int(headers["content-length"]))
    return status, headers.get("connection") != "close"


async def client(
    host: str,
    port: int,
    request: bytes,
    counter: list[int],
    measure_from: float,
    stop_at: float,
    max_requests: int,
    tally: Tally,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at and len(tally.latencies) < max_requests:
            counter[0] += 1
            payload = request.replace(UNIQUE, f"{counter[0]:010d}".encode())
            started = time.perf_counter()
            try:
                writer.write(payload)
                await writer.drain()
                status, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
                tally.errors += 1
                tally.first_error = tally.first_error or repr(exc)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            finished = time.perf_counter()
            if measure_from <= finished <= stop_at:
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    tally.latencies.append(finished - started)
                else:
                    tally.errors += 1
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


def build_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def run(args: argparse.Namespace) -> dict[str, object]:
    body = Path(args.body).read_bytes()
    request = build_request(args.host, args.port, args.path, body, args.content_type)
    tally = Tally()
    started = time.perf_counter()
    measure_from = started + args.warmup
    stop_at = measure_from + args.duration
    counter = [0]
    clients = [
        asyncio.ensure_future(
            client(
                args.host,
                args.port,
                request,
                counter,
                measure_from,
                stop_at,
                args.max_requests,
                tally,
            )
        )
        for _ in range(args.clients)
    ]
    await asyncio.wait(clients, timeout=stop_at + args.drain - time.perf_counter())
    for c in clients:
        c.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    window = min(time.perf_counter(), stop_at) - measure_from
    ms = np.array(tally.latencies) * 1000
    if args.latencies_out:
        np.save(args.latencies_out, ms)
    pct = np.percentile(ms, [50, 95, 99]).tolist() if len(ms) else [float("nan")] * 3
    return {
        "clients": args.clients,
        "requests": len(ms),
        "seconds": round(window, 3),
        "rps": len(ms) / window if window > 0 else 0.0,
        "p50_ms": pct[0],
        "p95_ms": pct[1],
        "p99_ms": pct[2],
        "errors": tally.errors,
        "statuses": tally.statuses,
        "first_error": tally.first_error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", required=True, help="file with the request body")
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for stragglers")
    parser.add_argument("--latencies-out", help="also save every counted latency (ms) as .npy")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("load is only ever sent to a loopback address")
    if not 1 <= args.clients <= 256:
        parser.error("--clients must be 1-256")
    try:
        import uvloop  # uvicorn's own event loop, installed with it: less client CPU per request
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
