"""``max_response_bytes`` caps the decoded body while it streams, on both backends (issue 12, item 7).

Before: a valid 50 MB JSON body was read whole (+139 MB RSS), a 1 MB gzip bomb inflated to +2.0 GB RSS
before ``ResponseDecodeError``, and an endless chunked body was buffered for as long as it flowed
(+391-399 MB for 400 MiB). Now each stops at the cap (16 MiB by default) with
``ResponseDecodeError(code="response_too_large")``, the connection is closed (the raw asyncio server of
``_hostile.py`` sees the client hang up, and the next call opens a new connection), and the memory the call
allocated at its peak (``tracemalloc``, every thread of the process: the server's too) stays under twice
the cap.

Each scenario runs on asyncio with both backends and on trio (httpx2; aiohttp is asyncio only).
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator

import anyio
import pytest

from billingos import AsyncBillingOS, ResponseDecodeError
from billingos._config import DEFAULT_MAX_RESPONSE_BYTES
from billingos._transport import BodyReader

from ._event_loops import ASYNCIO_LOOPS, run_on
from ._hostile import Answer, HostileServer, big_json, compressed, endless, gzip_bomb
from .conftest import wait_until_async

SECRET = "sk_test_" + "m" * 32
# httpx2's AsyncResponseStream iterates httpcore2's PoolByteStream without closing it when its consumer
# stops early (aclosing(aiter_raw()) closes httpx2's generators, not that one): trio warns once the garbage
# collector finds it, and finalizes it itself. The connection is already closed by then (asserted below).
_HTTPCORE2_GENERATOR = pytest.mark.filterwarnings(
    # Python 3.11-3.13 say "Exception ignored in: <...>", 3.14 "... while finalizing generator <...>".
    "ignore:Exception ignored (in.|while finalizing generator) "
    "<async_generator object PoolByteStream.__aiter__:pytest.PytestUnraisableExceptionWarning"
)
COMBOS = [
    *((loop, backend) for loop in ASYNCIO_LOOPS for backend in ("httpx2", "aiohttp")),
    pytest.param("trio", "httpx2", marks=_HTTPCORE2_GENERATOR),
]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros, gzip-compressed: about 1 MB on the wire."""
    return gzip_bomb(1024 * MiB)


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def refused_with_peak(
    answer: Answer, loop: str, backend: str
) -> tuple[ResponseDecodeError, int, HostileServer]:
    """Call once against ``answer`` (then once more, normally); the error and the first call's peak bytes."""
    server = HostileServer([answer])
    peak: list[int] = []

    async def main() -> ResponseDecodeError:
        async with AsyncBillingOS(SECRET, api_url=url, http_backend=backend, max_retries=0) as billing:  # type: ignore[arg-type]
            tracemalloc.start()
            try:
                with pytest.raises(ResponseDecodeError) as caught:
                    await billing.entitlements.check("user_1", "api_calls")
                peak.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            await wait_until_async(
                lambda: server.hangups == 1, "the server saw the client close the connection"
            )
            assert (await billing.entitlements.check("user_1", "api_calls")).has_access
            return caught.value

    with server.running() as url:
        error = run_on(loop, main)
    assert server.connections == 2  # the refused body's connection was not reused
    return error, peak[0], server


def check_refused(error: ResponseDecodeError) -> None:
    assert error.code == "response_too_large"
    assert f"max_response_bytes={DEFAULT_MAX_RESPONSE_BYTES}" in error.message
    assert error.request_id is not None


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
def test_a_50_mb_json_body_is_refused_before_it_is_read(loop: str, backend: str, figure) -> None:
    size = 50 * 1000 * 1000
    error, peak, server = refused_with_peak(big_json(size), loop, backend)
    check_refused(error)
    figure(
        f"{loop}/{backend}: valid 50 MB JSON (Content-Length): response_too_large, peak {peak / MiB:.1f} MiB "
        f"allocated (cap {DEFAULT_MAX_RESPONSE_BYTES // MiB} MiB), server wrote {server.sent / MiB:.1f} "
        "MiB before the client hung up (before: read whole, +139 MB RSS)"
    )
    assert peak < 2 * DEFAULT_MAX_RESPONSE_BYTES
    assert server.sent < size


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
def test_a_gzip_bomb_is_refused_at_the_cap(loop: str, backend: str, bomb: bytes, figure) -> None:
    error, peak, _ = refused_with_peak(compressed(bomb), loop, backend)
    check_refused(error)
    figure(
        f"{loop}/{backend}: gzip bomb of {len(bomb) / 1e6:.2f} MB (1 GiB inflated): response_too_large, "
        f"peak {peak / MiB:.1f} MiB allocated (cap {DEFAULT_MAX_RESPONSE_BYTES // MiB} MiB) "
        "(before: +2.0 GB RSS)"
    )
    assert peak < 2 * DEFAULT_MAX_RESPONSE_BYTES


@pytest.mark.parametrize(("loop", "backend"), COMBOS)
def test_an_endless_chunked_body_is_refused_at_the_cap(loop: str, backend: str, figure) -> None:
    flowing = 400 * MiB
    error, peak, server = refused_with_peak(endless(flowing), loop, backend)
    check_refused(error)
    figure(
        f"{loop}/{backend}: endless chunked body: response_too_large after the server wrote "
        f"{server.sent / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB allocated (cap "
        f"{DEFAULT_MAX_RESPONSE_BYTES // MiB} MiB) (before: buffered as long as it flowed, +391-399 MB "
        "for 400 MiB)"
    )
    assert peak < 2 * DEFAULT_MAX_RESPONSE_BYTES
    assert server.sent < flowing // 4


def test_a_smaller_cap_is_honoured_and_its_copies_share_the_pool(figure) -> None:
    server = HostileServer([big_json(300_000)])

    async def main() -> None:
        async with AsyncBillingOS(SECRET, api_url=url, max_retries=0, max_response_bytes=200_000) as billing:
            assert billing.max_response_bytes == 200_000
            with pytest.raises(ResponseDecodeError) as caught:
                await billing.entitlements.check("user_1", "api_calls")
            assert "max_response_bytes=200000" in caught.value.message
            roomy = billing.with_options(max_response_bytes=10 * MiB)
            assert roomy.max_response_bytes == 10 * MiB
            assert (await roomy.entitlements.check("user_1", "api_calls")).has_access

    with server.running() as url:
        anyio.run(main)
    figure(
        "max_response_bytes=200000: a 300 kB body refused; with_options(max_response_bytes=10 MiB) reads on"
    )


# ---------------------------------------------------------------------------------------------------------
# the reader itself: exact at the boundary, whatever the encoding and however the bytes are split


@pytest.mark.parametrize("encoding", [None, "identity", "gzip", "deflate", "deflate-raw"])
@pytest.mark.parametrize("split", [1, 7, 65536])
def test_the_body_reader_accepts_exactly_the_cap_and_refuses_one_byte_more(
    encoding: str | None, split: int
) -> None:
    limit = 10_000
    for size, accepted in ((limit, True), (limit + 1, False)):
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        if encoding == "gzip":
            wire = gzip.compress(body)
        elif encoding == "deflate":
            wire = zlib.compress(body)
        elif encoding == "deflate-raw":  # what some servers send for "deflate"
            raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            wire = raw.compress(body) + raw.flush()
        else:
            wire = body
        reader = BodyReader("deflate" if encoding == "deflate-raw" else encoding, limit)
        outcome: bytes | str
        try:
            for start in range(0, len(wire), split):
                reader.feed(wire[start : start + split])
            outcome = reader.finish()
        except ResponseDecodeError as exc:
            outcome = str(exc.code)
        assert outcome == (body if accepted else "response_too_large"), size


def test_the_body_reader_refuses_what_it_cannot_inflate() -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        BodyReader("br", 100)
    assert caught.value.code == "decode_error"
    reader = BodyReader("gzip", 100)
    with pytest.raises(ResponseDecodeError) as caught:
        reader.feed(b"not gzip at all")
    assert caught.value.code == "decode_error"
