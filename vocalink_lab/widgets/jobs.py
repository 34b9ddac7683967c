"""`JobsPanel`: every enhance and merge job in the page, with a progress bar and Cancel.

A job started from the dashboard, a notebook or another browser shows up here from the
server's ``job.updated`` events: what it works on, a bar, its state, and Cancel while it
runs. A failure keeps its one-line reason. Finished jobs stay listed (the newest
`KEEP_FINISHED`) until dismissed, so a lab assistant who looked away still sees how the
merge ended.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..protocol.events import JobState, Topic
from .panel import Panel

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["KEEP_FINISHED", "JobRow", "JobsPanel", "describe_job"]

#: Finished jobs listed (the newest); running ones are always listed.
KEEP_FINISHED = 5
_STYLE = {JobState.SUCCEEDED: "success", JobState.FAILED: "danger",
          JobState.CANCELLED: "warning", JobState.RUNNING: "info", JobState.QUEUED: ""}


def describe_job(job: Mapping[str, Any],
                 take_of: Callable[[Sequence[str]], str | None] | None = None) -> str:
    """What a job works on, in words: ``"Merge take Interview 3 (multichannel)"``.

    Parameters
    ----------
    job : mapping
        As the server lists it.
    take_of : callable, optional
        The take (its name, or id) that recordings all belong to, or None: a merge of a
        whole take reads as that take.
    """
    params = job.get("params") or {}
    kind = str(job.get("kind") or "job")
    if kind == "merge":
        ids = [str(i) for i in params.get("ids") or ()]
        take = params.get("take_id") or (take_of(ids) if take_of and ids else None)
        target = f"take {take}" if take else f"{len(ids)} recordings"
        mode = params.get("mode")
        return f"Merge {target}" + (f" ({mode})" if mode else "")
    if kind == "enhance":
        preset = params.get("preset")
        return (f"Clean {params.get('recording_id', '?')}"
                + (f" ({preset})" if preset else ""))
    if kind == "transcribe":
        return f"Transcribe {params.get('recording_id', '?')}"
    if kind == "transcribe_take":
        ids = [str(i) for i in params.get("recordings") or ()]
        take = (take_of(ids) if take_of and ids else None) or params.get("take_id", "?")
        return f"Transcribe take {take}"
    return f"{kind.capitalize()} {job.get('id', '')}".strip()


def _state(job: Mapping[str, Any]) -> JobState:
    return JobState(str(job.get("state") or JobState.QUEUED))


def _outcome(job: Mapping[str, Any]) -> str:
    state = _state(job)
    if state is JobState.FAILED:
        error = job.get("error") or {}
        return f"failed: {error.get('error') or error.get('code') or 'unknown error'}"
    if state is JobState.SUCCEEDED:
        result = job.get("result") or {}
        made = (result.get("recording") or {}).get("id")
        if made:
            return f"done → {made}"
        lines = (result.get("transcript") or {}).get("segments")
        return "done" if lines is None else f"done: {lines} line{'s' * (lines != 1)}"
    if state is JobState.RUNNING:
        return f"{100 * float(job.get('progress') or 0):.0f} %"
    return str(state)


class JobRow(widgets.HBox):  # type: ignore[misc]
    """One job: its description, a progress bar, its state, and Cancel (or Dismiss).

    Attributes
    ----------
    job_id : str
    label, state : ipywidgets.HTML
    bar : ipywidgets.FloatProgress
    cancel : ipywidgets.Button
        Cancel while the job runs, Dismiss once it ended.
    """

    def __init__(self, job: Mapping[str, Any],
                 take_of: Callable[[Sequence[str]], str | None] | None = None) -> None:
        self.job_id = str(job["id"])
        self._take_of = take_of
        self.label = widgets.HTML(layout=widgets.Layout(width="280px"))
        self.bar = widgets.FloatProgress(min=0.0, max=1.0,
                                         layout=widgets.Layout(width="200px"))
        self.state = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        self.cancel = widgets.Button(description="Cancel", layout=widgets.Layout(width="90px"))
        super().__init__([self.label, self.bar, self.state, self.cancel],
                         layout=widgets.Layout(align_items="center"))
        self.add_class("vocalink-job")
        self.finished = False
        self.update(job)

    def update(self, job: Mapping[str, Any]) -> None:
        """Show ``job`` as the server last reported it."""
        state = _state(job)
        self.finished = state.finished
        self.label.value = f"<b>{html.escape(describe_job(job, self._take_of))}</b>"
        self.bar.value = 1.0 if state is JobState.SUCCEEDED else float(job.get("progress") or 0)
        self.bar.bar_style = _STYLE[state]
        colour = "#c62828" if state is JobState.FAILED else "#424242"
        self.state.value = (f"<span style='color:{colour}'>"
                            f"{html.escape(_outcome(job), quote=False)}</span>")
        self.cancel.description = "Dismiss" if state.finished else "Cancel"
        self.cancel.button_style = "" if state.finished else "warning"


class JobsPanel(Panel):
    """The jobs of the server: running first, then the newest finished ones.

    Parameters
    ----------
    lab : Controller
        Whose jobs to show.
    **kwargs
        Passed to `Panel`.

    Attributes
    ----------
    rows : dict of str to JobRow
        The jobs shown, by id.
    box : ipywidgets.VBox
        Their rows.
    """

    def __init__(self, lab: Controller, **kwargs: Any) -> None:
        self.rows: dict[str, JobRow] = {}
        self._dismissed: set[str] = set()
        self.title = widgets.HTML("<b>Jobs</b>")
        self.box = widgets.VBox()
        style = widgets.HTML("<style>.vocalink-job{gap:8px}</style>")
        super().__init__(lab, [style, self.title, self.box], **kwargs)
        self.add_class("vocalink-jobs")
        self._listen((Topic.JOB_UPDATED.value, Topic.LAB_REFRESHED.value),
                     lambda *_: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        """Show the Lab's jobs as last known (events call this)."""
        jobs = [j for j in self.lab.job_list() if str(j["id"]) not in self._dismissed]
        running = [j for j in jobs if not _state(j).finished]
        finished = [j for j in jobs if _state(j).finished][:KEEP_FINISHED]
        shown = running + finished
        for job in shown:
            row = self.rows.get(str(job["id"]))
            if row is None:
                row = self.rows[str(job["id"])] = JobRow(job, self._take_of)
                row.cancel.on_click(lambda _, r=row: self._on_button(r))
            else:
                row.update(job)
        ids = {str(j["id"]) for j in shown}
        for job_id in [i for i in self.rows if i not in ids]:
            self.rows.pop(job_id).close()
        children = tuple(self.rows[str(j["id"])] for j in shown)
        if tuple(self.box.children) != children:
            self.box.children = children
        self.layout.display = "flex" if children else "none"

    def _take_of(self, recording_ids: Sequence[str]) -> str | None:
        """The take every one of these recordings belongs to (its name, else its id)."""
        wanted = set(recording_ids)
        takes = {r.get("take_id") for r in self.lab.recording_list() if r["id"] in wanted}
        if len(takes) != 1 or None in takes:
            return None
        take_id = str(takes.pop())
        take = next((t for t in self.lab.take_list() if str(t["id"]) == take_id), {})
        return str(take.get("name") or take_id)

    def _on_button(self, row: JobRow) -> None:
        if row.finished:
            self.dismiss(row.job_id)
        else:
            self.cancel(row.job_id)

    def cancel(self, job_id: str) -> None:
        """Ask the server to cancel a job (its row then reads "cancelled")."""
        self.run(self.lab.cancel_job(job_id), action="Cancel",
                 on_done=lambda _: self.report(f"Cancelled {job_id}", "ok"))

    def dismiss(self, job_id: str) -> None:
        """Stop listing a finished job."""
        self._dismissed.add(job_id)
        self.refresh()
