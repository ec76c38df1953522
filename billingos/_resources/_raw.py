"""``<resource>.with_raw_response``: the same methods, returning a :class:`RawResponse` around the result.

A proxy class per resource lists its methods as :class:`RawMethod` (or :class:`RawList`) descriptors;
each runs the resource's own method inside a capture (``_response.call_raw``), so validation, retries,
caches and models stay where they are and the blocking client wraps these exactly as it wraps the rest.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .._models import Page
from .._response import RawResponse, call_raw
from ._base import AsyncPaginator

__all__ = ["RawList", "RawMethod", "RawProxy"]

P = ParamSpec("P")
T = TypeVar("T")


class RawProxy:
    """Base of the ``with_raw_response`` proxies: holds the object whose methods they wrap."""

    __slots__ = ("_target",)

    def __init__(self, target: object) -> None:
        self._target = target

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._target!r}>"


def _signature(method: Callable[..., Any]) -> inspect.Signature:
    """The method's signature returning ``RawResponse[...]`` (a list: of its first ``Page``)."""
    signature = inspect.signature(method)
    annotation = signature.return_annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "Any")
    text = text.replace("AsyncPaginator[", "Page[")
    return signature.replace(return_annotation=f"RawResponse[{text}]")


class RawMethod(Generic[P, T]):
    """``proxy.<method>(...)``: the resource's method, returning ``RawResponse[<its result>]``."""

    def __init__(self, method: Callable[Concatenate[Any, P], Awaitable[T]]) -> None:
        self.__name__ = method.__name__
        self.__doc__ = method.__doc__
        self.__signature__ = _signature(method)

    @overload
    def __get__(self, obj: None, owner: type) -> RawMethod[P, T]: ...
    @overload
    def __get__(self, obj: RawProxy, owner: type) -> Callable[P, Awaitable[RawResponse[T]]]: ...
    def __get__(
        self, obj: RawProxy | None, owner: type
    ) -> RawMethod[P, T] | Callable[P, Awaitable[RawResponse[T]]]:
        if obj is None:
            return self
        method = getattr(obj._target, self.__name__)

        def raw(*args: P.args, **kwargs: P.kwargs) -> Awaitable[RawResponse[T]]:
            return call_raw(method, args, kwargs)

        raw.__name__ = self.__name__
        raw.__doc__ = self.__doc__
        return raw

    def __call__(self, proxy: RawProxy, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[RawResponse[T]]:
        return call_raw(getattr(proxy._target, self.__name__), args, kwargs)


class RawList(Generic[P, T]):
    """``proxy.list(...)``: the first page of the list, as ``RawResponse[Page[T]]``.

    A list is many requests; its raw form is the first one. ``parse()`` is the :class:`Page` with
    ``total`` and ``total_pages``; pages after the first are read with the plain ``list(...).page(n)``.
    """

    def __init__(self, method: Callable[Concatenate[Any, P], AsyncPaginator[T]]) -> None:
        self.__name__ = method.__name__
        self.__doc__ = method.__doc__
        self.__signature__ = _signature(method)

    @overload
    def __get__(self, obj: None, owner: type) -> RawList[P, T]: ...
    @overload
    def __get__(self, obj: RawProxy, owner: type) -> Callable[P, Awaitable[RawResponse[Page[T]]]]: ...
    def __get__(
        self, obj: RawProxy | None, owner: type
    ) -> RawList[P, T] | Callable[P, Awaitable[RawResponse[Page[T]]]]:
        if obj is None:
            return self
        method = getattr(obj._target, self.__name__)

        def raw(*args: P.args, **kwargs: P.kwargs) -> Awaitable[RawResponse[Page[T]]]:
            pager: AsyncPaginator[T] = method(*args, **kwargs)  # arguments checked now, as list does
            return call_raw(pager.page, (1,), {})

        raw.__name__ = self.__name__
        raw.__doc__ = self.__doc__
        return raw

    def __call__(
        self, proxy: RawProxy, /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[RawResponse[Page[T]]]:
        pager: AsyncPaginator[T] = getattr(proxy._target, self.__name__)(*args, **kwargs)
        return call_raw(pager.page, (1,), {})
