"""The device agent: records locally, survives crashes and outages, uploads when it can.

Imports nothing of Jupyter, librosa, ipywidgets or Tornado, so that it installs on a
Raspberry Pi or in Termux.
"""

from .agent import Agent, AgentConfig, AgentState
from .clock import DeviceClock
from .outbox import Outbox, OutboxItem
from .simulate import Simulation, simulate_devices
from .sources import NoMicrophone, make_source
from .spool import FinishedRecording, SpoolWriter, recover

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "DeviceClock",
    "FinishedRecording",
    "NoMicrophone",
    "Outbox",
    "OutboxItem",
    "Simulation",
    "SpoolWriter",
    "make_source",
    "recover",
    "simulate_devices",
]
