"""`Panel`: what every panel shares — a Lab, a status line, its own tasks, its subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import ipywidgets as widgets

from .render import error_message

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["QUIET_S", "Panel", "banner", "empty_state"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATUS_STYLE = {
    "info": "color:#424242",
    "busy": "color:#1565c0",
    "ok": "color:#2e7d32",
    "error": "color:#c62828;font-weight:bold",
}


#: Deferred content (the Recordings rows, a tab's first content) waits until its panel has
#: been quiet (no click on it) this long: clicks are answered first. 10,000 rows keep the
#: kernel and the browser busy for half a second.
QUIET_S = 0.5


def banner(message: str, kind: str = "error") -> str:
    """HTML of one line of status: ``message`` (escaped, on one line) in its kind's colour.

    ``kind`` is info, busy, ok or error. What `Panel.report` shows, and what a tab that
    could not be built says instead of a traceback.
    """
    if not message:
        return ""
    style = _STATUS_STYLE.get(kind, _STATUS_STYLE["info"])
    text = html.escape(" ".join(message.split()), quote=False)
    return f'<span class="vocalink-status vocalink-{kind}" style="{style}">{text}</span>'


def empty_state(message: str) -> str:
    """HTML of what a panel shows before it has anything to show (in grey, italic)."""
    return (f'<div class="vocalink-empty" style="color:#757575;font-style:italic;'
            f'padding:24px 8px">{html.escape(message, quote=False)}</div>')


#: Events that redraw a summary are coalesced over this long (`Panel._coalesce`).
COALESCE_S = 0.2


class Panel(widgets.VBox):  # type: ignore[misc]
    """Base class of the panels: a `VBox` bound to a `Controller` (a `~vocalink_lab.lab.Lab`).

    Loop-only: build a panel, click its buttons and receive its events on the event
    loop the Lab runs on (the kernel's). Actions run as tasks on that loop; their
    outcome, or their error as one readable line, shows in `status`. Live updates
    come from ``lab.on`` events, never from threads or polling.

    Parameters
    ----------
    lab : Controller
        The lab to show and drive.
    children : sequence of Widget
        The panel's content; the status line goes below it.
    **kwargs
        Passed to `ipywidgets.VBox`.

    Attributes
    ----------
    lab : Controller
        The lab.
    status : ipywidgets.HTML
        One line: what the panel is doing, what it did, or what went wrong.
    message : str
        That line as plain text.
    message_kind : str
        ``info``, ``busy``, ``ok`` or ``error``.
    """

    def __init__(self, lab: Controller, children: Sequence[widgets.Widget] = (),
                 **kwargs: Any) -> None:
        self.lab = lab
        self.status = widgets.HTML()
        self.message = ""
        self.message_kind = "info"
        self._tasks: set[asyncio.Future[Any]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._soon: dict[str, asyncio.TimerHandle] = {}
        super().__init__([*children, self.status], **kwargs)

    # -- status --------------------------------------------------------------------------------

    def report(self, message: str, kind: str = "info") -> None:
        """Show ``message`` in the status line (``kind``: info, busy, ok or error)."""
        self.message, self.message_kind = message, kind
        self.status.value = banner(message, kind)

    # -- tasks -----------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], *, action: str,
            on_done: Callable[[T], object] | None = None) -> asyncio.Future[T]:
        """Run an action's coroutine on the loop; report its outcome in `status`.

        Button callbacks are synchronous: they call this and return at once.

        Parameters
        ----------
        coro : coroutine
            The work (a Lab coroutine, usually).
        action : str
            What it is, for the status line ("Start", "Rename"...).
        on_done : callable, optional
            Called on the loop with the result; it reports success itself. Without it,
            the status says "<action>: done".

        Returns
        -------
        asyncio.Future
            The task (kept by the panel until it ends).
        """
        self.report(f"{action}…", "busy")

        def finished(result: T) -> None:
            if on_done is None:
                self.report(f"{action}: done", "ok")
            else:
                on_done(result)

        return self._spawn(coro, action=action, on_done=finished)

    def _spawn(self, coro: Coroutine[Any, Any, T], *, action: str | None = None,
               on_done: Callable[[T], object] | None = None) -> asyncio.Future[T]:
        """Schedule ``coro`` as a task the panel keeps; errors go to the status line."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(future: asyncio.Future[T]) -> None:
            self._tasks.discard(future)
            if future.cancelled():
                return
            exc = future.exception()
            try:
                if exc is not None:
                    raise exc
                if on_done is not None:
                    on_done(future.result())
            except Exception as error:
                log.debug("%s failed", action or coro, exc_info=error)
                prefix = f"{action} failed: " if action else ""
                self.report(prefix + error_message(error), "error")

        task.add_done_callback(done)
        return task

    @property
    def busy(self) -> bool:
        """Whether an action of this panel is still running."""
        return bool(self._tasks)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every action and render this panel started has finished.

        Parameters
        ----------
        timeout : float, optional
            Seconds; `TimeoutError` after that.
        """
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
                await asyncio.sleep(0)  # let the done callbacks run

    # -- events ----------------------------------------------------------------------------------

    def _coalesce(self, redraw: Callable[[], object], delay: float = COALESCE_S
                  ) -> Callable[..., None]:
        """A listener calling ``redraw`` once, ``delay`` s after the first of a burst of events.

        A thousand devices' updates redraw a summary once, not a thousand times.
        """
        key = getattr(redraw, "__name__", repr(redraw))

        def later(*_: object) -> None:
            if key in self._soon:
                return

            def run() -> None:
                self._soon.pop(key, None)
                redraw()

            self._soon[key] = asyncio.get_running_loop().call_later(delay, run)

        return later

    def _listen(self, topics: str | Iterable[str],
                callback: Callable[[str, Mapping[str, Any]], object]) -> None:
        """Subscribe to Lab events until `close`."""
        self._unsubscribe.append(self.lab.on(topics, callback))

    def close(self) -> None:
        """Unsubscribe from the Lab, cancel running actions, and close the widget."""
        for off in getattr(self, "_unsubscribe", []):
            off()
        self._unsubscribe = []
        for handle in getattr(self, "_soon", {}).values():
            handle.cancel()
        for task in list(getattr(self, "_tasks", ())):
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                task.cancel()
        super().close()
