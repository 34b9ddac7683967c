"""The controllers' contract: the topics of ``/ws/events`` and the states of a job.

The server publishes these, and `Client`, the Lab and the panels follow them; they
live here, beside the devices' messages, so that neither side spells one as a
string literal of its own. Both are `StrEnum`: a member *is* its string, so it
compares equal to what arrives in JSON and encodes as itself.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JobState", "Topic"]


class Topic(StrEnum):
    """Event topics: ``{"topic", "data", "at"}`` frames on ``/ws/events``.

    The ``lab.*`` topics never cross the wire: the Lab raises them for its own
    listeners when its live mirror changes as a whole.
    """

    DEVICE_REGISTERED = "device.registered"
    DEVICE_UPDATED = "device.updated"
    DEVICE_OFFLINE = "device.offline"
    #: A device was forgotten: rejected, or pending when it left (``data["device_id"]``).
    DEVICE_REMOVED = "device.removed"
    COMMAND_SENT = "command.sent"
    COMMAND_OUTCOME = "command.outcome"
    COMMAND_DONE = "command.done"
    RECORDING_ANNOUNCED = "recording.announced"
    RECORDING_ADDED = "recording.added"
    RECORDING_DELETED = "recording.deleted"
    SERVER_RENAMED = "server.renamed"
    #: mDNS advertising changed state (``data["discovery"]`` as in ``GET /api/server``).
    SERVER_DISCOVERY = "server.discovery"
    #: The join code or the devices waiting for approval changed (``data["pairing"]`` as
    #: in ``GET /api/pairing``).
    SERVER_PAIRING = "server.pairing"
    TAKE_STARTED = "take.started"
    TAKE_STOPPED = "take.stopped"
    #: A take's name or notes changed (``data["take"]``: its row).
    TAKE_UPDATED = "take.updated"
    #: A take was deleted with its recordings (``data["take_id"]``).
    TAKE_DELETED = "take.deleted"
    JOB_UPDATED = "job.updated"
    #: A recording or a take was transcribed (``data["transcript"]``: its summary, with
    #: ``kind`` and ``subject_id``).
    TRANSCRIPT_UPDATED = "transcript.updated"
    #: The Lab read the whole state again (after connecting or reconnecting).
    LAB_REFRESHED = "lab.refreshed"
    #: The Lab lost its event stream; it reconnects by itself.
    LAB_DISCONNECTED = "lab.disconnected"
    #: The Lab re-read the takes (they change in the catalog just after a take event).
    LAB_TAKES = "lab.takes"

    @property
    def family(self) -> str:
        """What the topic is about: ``device``, ``command``, ``recording``, ``take``..."""
        return self.value.partition(".")[0]

    @classmethod
    def of_family(cls, family: str) -> tuple[Topic, ...]:
        """Every topic about ``family`` (``"device"`` → registered, updated, offline)."""
        return tuple(topic for topic in cls if topic.family == family)


class JobState(StrEnum):
    """Where a job is in its life: queued → running → succeeded / failed / cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the three final states."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
