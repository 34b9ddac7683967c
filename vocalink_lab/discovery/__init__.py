"""mDNS discovery: advertise a server (and rename it live), find servers on the network.

Everything here runs on an asyncio loop (python-zeroconf's async API): the sync API
would block the loop the kernel shares with the server.
"""

from .advertiser import Advertiser, AdvertiserState
from .browser import DiscoveryEvent, find_servers, watch_servers
from .interfaces import InterfaceSelection, select_interfaces
from .service import SERVICE_TYPE, ServerInfo, instance_name, with_suffix

__all__ = [
    "SERVICE_TYPE",
    "Advertiser",
    "AdvertiserState",
    "DiscoveryEvent",
    "InterfaceSelection",
    "ServerInfo",
    "find_servers",
    "instance_name",
    "select_interfaces",
    "watch_servers",
    "with_suffix",
]
