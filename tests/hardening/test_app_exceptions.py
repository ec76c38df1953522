"""The application's exceptions come out of the SDK's context managers and lifespans as themselves.

``except AppError:`` must catch what the application raised inside ``async with billing.usage_recorder()``
(memory and outbox recorders, asyncio and trio, both HTTP backends), inside ``async with AsyncBillingOS()``,
``with BillingOS()``, ``with billing.usage_recorder()`` (blocking), and in the user's own lifespan passed to
``billingos_lifespan(lifespan=...)``, at startup or at shutdown. The exception is the very object raised, its
traceback still holds the application's frame, and no ``ExceptionGroup`` wraps it: a group appears only when
the application's own task group made one. The SDK's own errors (an outbox that fails at close) come out as
themselves too; when both the body and the SDK's cleanup fail, the body's exception wins and carries a note
naming the SDK's error (also logged).

Each test talks to the embedded server over real HTTP on loopback, and prints what came out.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from billingos import AsyncBillingOS, BillingOS, BillingOSError, UsageRecorder
from billingos._outbox import SQLiteOutbox
from billingos.integrations.fastapi import billingos_lifespan
from billingos.testing import FakeBillingOS

from .._recorder_support import seed
from ._event_loops import LOOPS, run_on

RUNS = [
    pytest.param(loop, http_backend, id=f"{loop}-{http_backend}")
    for loop in LOOPS
    for http_backend in ("httpx2", "aiohttp")
    if loop != "trio" or http_backend == "httpx2"
]


class AppError(Exception):
    """The application's own error."""


def raise_app_error() -> None:
    """The application's frame: it must still be in the traceback that comes out."""
    raise AppError("the application failed")


def frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def outcome(exc: BaseException) -> str:
    inner = "".join(f" [{type(e).__name__}]" for e in getattr(exc, "exceptions", ()))
    return f"{type(exc).__name__}{inner}"


@pytest.fixture
def fake() -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, seed=12)
    seed(fake)
    return fake


@pytest.fixture
def url(fake: FakeBillingOS) -> Iterator[str]:
    with fake.serve() as url:
        yield url


def run(backend: str, main: Callable[[], Any]) -> Any:
    return run_on(backend, main)


@pytest.mark.parametrize("where", ["memory", "outbox"])
@pytest.mark.parametrize(("backend", "http_backend"), RUNS)
def test_an_app_error_in_the_recorder_body_comes_out_as_itself(
    backend: str, http_backend: str, where: str, fake: FakeBillingOS, url: str, tmp_path: Path, figure: Any
) -> None:
    outbox = str(tmp_path / "usage.db") if where == "outbox" else None

    async def main() -> tuple[BaseException | None, Any]:
        async with AsyncBillingOS(fake.secret_key, api_url=url, http_backend=http_backend) as billing:
            recorder = billing.usage_recorder(outbox=outbox)
            try:
                async with recorder as r:
                    r.record("user_0", "api_calls", 3)
                    raise_app_error()
            except AppError as exc:  # what a user writes: it must catch it
                return exc, recorder.stats
            except BaseException as exc:
                return exc, recorder.stats
        return None, None

    caught, stats = run(backend, main)
    figure(f"{backend}/{http_backend}/{where}: came out as {outcome(caught)}")
    assert type(caught) is AppError
    assert "raise_app_error" in frames(caught)  # the application's frame is kept
    assert not getattr(caught, "__notes__", [])  # the SDK's cleanup did not fail
    # and the recorder still closed properly: the event recorded before the error was sent, once
    assert (stats.recorded, stats.confirmed, stats.pending, stats.dead) == (1, 1, 0, 0)
    assert fake.usage_of("user_0", "api_calls") == 3


@pytest.mark.parametrize("backend", LOOPS)
def test_a_group_from_the_apps_own_task_group_comes_out_unchanged(
    backend: str, fake: FakeBillingOS, url: str, figure: Any
) -> None:
    async def failing() -> None:
        raise_app_error()

    async def main() -> BaseException:
        async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
            try:
                async with billing.usage_recorder() as r, anyio.create_task_group() as group:
                    r.record("user_0", "api_calls")
                    group.start_soon(failing)
            except BaseException as exc:
                return exc
        raise AssertionError("nothing was raised")

    caught = run(backend, main)
    figure(f"{backend}: came out as {outcome(caught)}")
    assert isinstance(caught, BaseExceptionGroup)  # the application's own group, not one of ours around it
    assert [type(e) for e in caught.exceptions] == [AppError]


@pytest.mark.parametrize("backend", LOOPS)
def test_an_outbox_failing_at_close_comes_out_as_itself_or_as_a_note(
    backend: str, fake: FakeBillingOS, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    real_aclose = SQLiteOutbox.aclose

    async def failing_aclose(self: SQLiteOutbox) -> None:
        await real_aclose(self)
        raise BillingOSError(f"The usage outbox {self.path!r} could not be closed.", code="outbox_error")

    monkeypatch.setattr(SQLiteOutbox, "aclose", failing_aclose)

    async def main(body_fails: bool) -> BaseException:
        async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
            try:
                async with billing.usage_recorder(outbox=str(tmp_path / f"{body_fails}.db")) as r:
                    r.record("user_0", "api_calls")
                    if body_fails:
                        raise_app_error()
            except BaseException as exc:
                return exc
        raise AssertionError("nothing was raised")

    alone = run(backend, lambda: main(False))
    both = run(backend, lambda: main(True))
    figure(f"{backend}: close fails alone -> {outcome(alone)}; body and close fail -> {outcome(both)}")
    assert type(alone) is BillingOSError
    assert alone.code == "outbox_error"
    assert type(both) is AppError
    assert "raise_app_error" in frames(both)
    (note,) = both.__notes__
    assert "outbox_error" in note
    assert "could not be closed" in note


def app_lifespan(when: str) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        if when == "startup":
            raise_app_error()
        yield {"mine": 1}
        if when == "shutdown":
            raise_app_error()

    return lifespan


@pytest.mark.parametrize("when", ["startup", "shutdown"])
@pytest.mark.parametrize("backend", LOOPS)
def test_an_error_in_the_users_lifespan_comes_out_as_itself(
    backend: str, when: str, fake: FakeBillingOS, url: str, figure: Any
) -> None:
    opened: list[AsyncBillingOS] = []

    def factory() -> AsyncBillingOS:
        opened.append(AsyncBillingOS(fake.secret_key, api_url=url))
        return opened[-1]

    lifespan = billingos_lifespan(factory, lifespan=app_lifespan(when))

    async def main() -> BaseException:
        try:
            async with lifespan(object()) as state:
                state["billingos"].recorder.record("user_0", "api_calls")
        except BaseException as exc:
            return exc
        raise AssertionError("nothing was raised")

    caught = run(backend, main)
    figure(f"{backend}: an error in the user's lifespan at {when} came out as {outcome(caught)}")
    assert type(caught) is AppError
    assert "raise_app_error" in frames(caught)
    assert opened[0].is_closed  # and the client was closed all the same
    if when == "shutdown":
        assert fake.usage_of("user_0", "api_calls") == 1  # the recorder drained before the error


@pytest.mark.parametrize("backend", LOOPS)
def test_an_app_error_in_the_clients_body_comes_out_as_itself(
    backend: str, fake: FakeBillingOS, url: str, figure: Any
) -> None:
    async def main() -> BaseException:
        try:
            async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
                await billing.entitlements.check("user_0", "api_calls")
                raise_app_error()
        except BaseException as exc:
            return exc
        raise AssertionError("nothing was raised")

    caught = run(backend, main)
    figure(f"{backend}: came out as {outcome(caught)}")
    assert type(caught) is AppError
    assert "raise_app_error" in frames(caught)


@pytest.mark.parametrize("where", ["memory", "outbox"])
def test_an_app_error_in_the_blocking_client_and_recorder_comes_out_as_itself(
    where: str, fake: FakeBillingOS, url: str, tmp_path: Path, figure: Any
) -> None:
    outbox = str(tmp_path / "usage.db") if where == "outbox" else None

    def app() -> None:
        with BillingOS(fake.secret_key, api_url=url) as billing, billing.usage_recorder(outbox=outbox) as r:
            r.record("user_0", "api_calls", 2)
            raise_app_error()

    with pytest.raises(AppError) as info:
        app()
    figure(f"{where}: came out as {outcome(info.value)}")
    assert type(info.value) is AppError
    assert "raise_app_error" in frames(info.value)
    assert fake.usage_of("user_0", "api_calls") == 2


def test_an_app_error_in_the_embedded_servers_block_comes_out_as_itself(fake: FakeBillingOS) -> None:
    with pytest.raises(AppError) as info, fake.serve():
        raise_app_error()
    assert type(info.value) is AppError
    assert "raise_app_error" in frames(info.value)


@pytest.mark.parametrize("backend", LOOPS)
def test_a_failing_task_of_the_recorder_comes_out_as_itself(
    backend: str, fake: FakeBillingOS, url: str, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    """A bug in one of the recorder's own tasks cancels the body and comes out as itself, not in a group
    (and not as a stray cancellation escaping the application's scope)."""

    class RecorderBug(Exception):
        pass

    async def broken_pump(self: UsageRecorder) -> None:
        await anyio.lowlevel.checkpoint()
        raise RecorderBug("a bug in the recorder's pump")

    monkeypatch.setattr(UsageRecorder, "_pump", broken_pump)

    async def main() -> BaseException:
        async with AsyncBillingOS(fake.secret_key, api_url=url) as billing:
            try:
                async with billing.usage_recorder() as r:
                    r.record("user_0", "api_calls")
                    await anyio.sleep(5)  # cancelled by the recorder's failing task
            except BaseException as exc:
                return exc
        raise AssertionError("nothing was raised")

    caught = run(backend, main)
    figure(f"{backend}: came out as {outcome(caught)}")
    assert type(caught) is RecorderBug
    assert "broken_pump" in frames(caught)
