"""``vocalink dashboard``: the no-code Voila app, served from the package's own files.

One process holds the recording server (and, with ``--demo``, a few simulated
devices); Voila runs beside it as a child process and renders the packaged
notebook (`NOTEBOOK`) for each visitor in a kernel of its own. Each kernel's
``Lab.start()`` finds the data dir locked by this process and attaches to its
server, so devices, recordings and takes outlive the visitors, and a visitor who
leaves takes nothing down.

The page works offline: it is rendered with the ``vocalink`` Voila template
(`SHARE`), which serves Font Awesome from the package instead of a CDN. Kernels
are shut down when their page closes (Voila's ``beforeunload`` beacon); those
whose page just vanished (a crashed browser, a phone gone to sleep) are culled
once nobody has been connected to them for ``--cull-after`` seconds
(`kernels.DashboardKernelManager`).

Nothing here imports Jupyter, Voila or Tornado at module level: the CLI imports
this module on the device agent's base install too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ANDROID_PAIRING, Settings
from ..datadir import DataDirLock
from ..errors import VocalinkError
from ..links import phone_lines
from ..signals import signal_waiter
from ..tokens import server_token

if TYPE_CHECKING:
    from .app import DashboardApp

__all__ = [
    "DEFAULT_PORT",
    "NOTEBOOK",
    "SHARE",
    "TEMPLATE",
    "VoilaOptions",
    "add_dashboard_command",
    "dashboard_app",
    "run_dashboard",
    "voila_command",
]

log = logging.getLogger(__name__)

#: The token the page asks for (the controller token), given by `vocalink dashboard` to its
#: Voila (`runner`) in the environment, never on a command line.
PAGE_TOKEN_ENV = "VOCALINK_PAGE_TOKEN"

PACKAGE_DIR = Path(__file__).resolve().parent
#: The dashboard notebook Voila renders (``notebooks/dashboard.ipynb`` is a copy of it).
NOTEBOOK = PACKAGE_DIR / "dashboard.ipynb"
#: A Jupyter data dir holding the ``vocalink`` Voila template (put first on JUPYTER_PATH).
SHARE = PACKAGE_DIR / "share"
TEMPLATE = "vocalink"
DEFAULT_PORT = 8866
DEFAULT_DEMO_DEVICES = 2
#: Seconds after a visitor takes the pre-heated kernel before the next one is started.
PREHEAT_REFILL_S = 10.0
#: How long the URL waits for the pre-heated kernel to have started.
READY_WAIT_S = 60.0


async def dashboard_app(**kwargs: Any) -> DashboardApp:
    """The dashboard as one widget: start (or attach to) the lab and build its panels.

    See `vocalink_lab.dashboard.app.dashboard_app` (loaded on first use: it needs
    the ``lab`` extra).
    """
    from .app import dashboard_app as build

    return await build(**kwargs)


# -- Voila ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoilaOptions:
    """How Voila is run.

    Parameters
    ----------
    port : int
        Port of the page.
    host : str
        Address the page listens on (loopback by default: the page controls the lab and
        has no login).
    cull_after_s : float
        A kernel nobody has been connected to for this long is shut down.
    cull_interval_s : float
        How often kernels are checked.
    log_level : str
        Voila's log level.
    preheat : bool
        Keep one kernel ready with the notebook already run (Voila's pre-heated kernel
        pool): a visitor gets a page whose panels exist and follow the server, instead
        of waiting for a kernel to start and import. It costs one idle kernel.
    ready_file : Path, optional
        Written once the first kernel has started
        (`DashboardKernelManager.ready_file`).
    """

    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    cull_after_s: float = 120.0
    cull_interval_s: float = 30.0
    log_level: str = "WARN"
    preheat: bool = False
    ready_file: Path | None = None


def voila_command(options: VoilaOptions, *, python: str | None = None,
                  notebook: Path = NOTEBOOK) -> list[str]:
    """The command line that serves ``notebook`` with the vocalink template.

    The child must also get `voila_environment` (``JUPYTER_PATH`` finds the template).
    """
    manager = "vocalink_lab.dashboard.kernels.DashboardKernelManager"
    return [
        python or sys.executable, "-m", "vocalink_lab.dashboard.runner", str(notebook),
        "--no-browser",
        f"--Voila.ip={options.host}",
        f"--Voila.port={options.port}",
        "--Voila.port_retries=0",
        f"--Voila.log_level={options.log_level}",
        f"--template={TEMPLATE}",
        "--theme=light",
        f"--VoilaConfiguration.multi_kernel_manager_class={manager}",
        # Ordinary idle culling stays on as a backstop; a dashboard's kernel is never
        # idle while its widgets follow the devices, hence the disconnected rule.
        f"--MappingKernelManager.cull_interval={max(1, round(options.cull_interval_s))}",
        "--MappingKernelManager.cull_idle_timeout=86400",
        f"--DashboardKernelManager.cull_disconnected_after={options.cull_after_s:g}",
        *([f"--DashboardKernelManager.ready_file={options.ready_file}"]
          if options.ready_file else []),
        *(["--preheat_kernel=True", "--pool_size=1",
           # The next visitor's kernel starts once this one's page is up, not while it
           # loads: on a small machine the two would share its cores.
           f"--VoilaKernelManager.fill_delay={PREHEAT_REFILL_S:g}"] if options.preheat else []),
    ]


def voila_environment(base: Mapping[str, str], *, kernels_dir: Path,
                      data_dir: Path, demo: bool, token: str | None = None) -> dict[str, str]:
    """The environment of the Voila child (and so of every kernel it starts).

    With ``token`` (the controller token), the page asks for it, and the kernels send it
    to the server (``VOCALINK_TOKEN``): nobody types it twice.
    """
    path = [str(SHARE), str(kernels_dir)]
    if base.get("JUPYTER_PATH"):
        path.append(base["JUPYTER_PATH"])
    env = {
        **base,
        "JUPYTER_PATH": os.pathsep.join(path),
        "VOCALINK_DATA_DIR": str(data_dir),
        "VOCALINK_DEMO": "1" if demo else "0",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # quiet ipykernel's debugger warning
    }
    env.pop(PAGE_TOKEN_ENV, None)
    if token:
        env[PAGE_TOKEN_ENV] = token
        env["VOCALINK_TOKEN"] = token
    return env


def write_kernelspec(root: Path, python: str | None = None) -> Path:
    """A ``python3`` kernelspec on this very Python, under ``root/kernels``.

    With ``root`` on JUPYTER_PATH it wins over a user's own ``python3`` kernelspec,
    which may point at a Python without vocalink_lab.
    """
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Python 3 (vocalink)",
        "language": "python",
        "metadata": {"debugger": False},
    }, indent=1))
    return spec


def free_port(host: str, start: int, tries: int = 50) -> int:
    """The first port from ``start`` on that ``host`` can listen on (any with 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in ([0] if start == 0 else range(start, start + tries)):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    if tries == 1:
        raise VocalinkError(f"port {start} on {host} is in use (or not allowed); try another "
                            "--port, or 0 for any free one")
    raise VocalinkError(f"no free port on {host} in {start}..{start + tries - 1}")


def page_urls(host: str, port: int) -> list[str]:
    """The URLs to open the page at: loopback first, then the LAN addresses."""
    if host in ("0.0.0.0", "::", ""):
        from ..server.app import local_addresses

        lan = [a for a in local_addresses(host) if not a.startswith("127.")]
        return [f"http://127.0.0.1:{port}/", *(f"http://{a}:{port}/" for a in lan)]
    shown = f"[{host}]" if ":" in host else host
    return [f"http://{shown}:{port}/"]


# -- the command ---------------------------------------------------------------------------


def add_dashboard_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``vocalink dashboard`` to the CLI's subparsers; `run_dashboard` runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard", help="run the no-code dashboard (Voila) and the server until Ctrl-C",
        description="Serve the recording server and its dashboard page (Voila). Prints the "
        "page's URL first; Ctrl-C stops everything.")
    parser.add_argument("--demo", action="store_true",
                        help="also run simulated devices, to try it without hardware")
    parser.add_argument("--demo-devices", type=int, default=DEFAULT_DEMO_DEVICES, metavar="N",
                        help=f"how many with --demo (default {DEFAULT_DEMO_DEVICES})")
    parser.add_argument("--port", type=int,
                        help=f"port of the page (default {DEFAULT_PORT}, or the next free one; "
                        "0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address of the page (default 127.0.0.1: this machine only; "
                        "0.0.0.0 shows it to the LAN, which then needs the token too)")
    parser.add_argument("--token", help="the controller token, which the page asks for too "
                        "(default: VOCALINK_TOKEN, else the one kept in the data dir)")
    parser.add_argument("--open", action="store_true", default=None,
                        help="turn authentication off, on purpose: anyone who reaches the "
                        "page or the server controls the lab (VOCALINK_OPEN=1)")
    parser.add_argument("--android", choices=ANDROID_PAIRING, default=None,
                        help="VocalLink Android app sessions: 'approve' each (default) or "
                        "'trust' them at once, on a private network (VOCALINK_ANDROID)")
    parser.add_argument("--data-dir", type=Path,
                        help="where recordings and the catalog live (default ./data)")
    parser.add_argument("--name", help="server name that devices see")
    parser.add_argument("--no-advertise", dest="advertise", action="store_false", default=None,
                        help="do not announce the server with mDNS")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--no-preheat", dest="preheat", action="store_false",
                        help="do not keep a kernel ready for the next visitor (saves its "
                        "memory; each page then takes a few seconds more to open)")
    parser.add_argument("--cull-after", type=float, default=120.0, metavar="SECONDS",
                        help="shut a page's kernel down when nobody has been connected to it "
                        "for this long (default 120)")
    parser.set_defaults(run=run_dashboard)
    return parser


def run_dashboard(args: argparse.Namespace) -> int:
    """Run ``vocalink dashboard`` with parsed arguments; returns the exit status."""
    missing = [m for m in ("voila", "ipywidgets", "ipykernel") if find_spec(m) is None]
    if missing:
        raise VocalinkError(f"the dashboard needs the 'lab' extra ({', '.join(missing)} "
                            "missing): pip install 'vocalink-lab[lab]'")
    if args.demo and args.demo_devices < 1:
        raise VocalinkError("--demo-devices must be at least 1")
    if args.cull_after <= 0:
        raise VocalinkError("--cull-after must be positive")
    settings = Settings.from_env().replace(data_dir=args.data_dir, name=args.name,
                                           advertise=args.advertise, token=args.token,
                                           open=args.open, android=args.android)
    return asyncio.run(_dashboard(args, settings))


async def _dashboard(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = settings.data_dir.expanduser().resolve()
    port = free_port(args.host, DEFAULT_PORT if args.port is None else args.port,
                     tries=50 if args.port is None else 1)
    preheat = getattr(args, "preheat", True)
    signalled = await signal_waiter()
    runtime = Path(tempfile.mkdtemp(prefix="vocalink-dashboard-"))
    write_kernelspec(runtime)
    ready = runtime / "kernel-ready" if preheat else None
    options = VoilaOptions(port=port, host=args.host, cull_after_s=args.cull_after,
                           log_level="INFO" if getattr(args, "verbose", 0) else "WARN",
                           preheat=preheat, ready_file=ready)

    async def start_voila(token: str | None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *voila_command(options),
            env=voila_environment(os.environ, kernels_dir=runtime, data_dir=data_dir,
                                  demo=args.demo, token=token),
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches this process, which stops Voila
        )

    # Voila, its pre-heated kernel and the server each take a second or two to start:
    # all at once, Voila first (this process imports the server meanwhile). The data
    # dir is taken before, so that the kernel's `Lab.start` waits for this server and
    # attaches, never serves itself. Voila gets the token the server will use
    # (`server_token`, as the server reads it); should the lab end up with another
    # (attached to a server of another process), Voila is started again with that
    # one. The page's URL is printed once both are up, so no page is asked for before
    # the server runs.
    token = None if settings.open else server_token(data_dir, settings.token)
    lock = DataDirLock(data_dir)
    held = lock.acquire()
    try:
        voila = await start_voila(token)
    except BaseException:
        lock.release()
        shutil.rmtree(runtime, ignore_errors=True)
        raise
    try:
        from ..lab import Lab

        # This process serves (or attaches) and shows nothing: the pages' kernels follow
        # the server, so it does not read the catalog while they start.
        lab = await Lab.start(settings=settings.replace(data_dir=data_dir),
                              lock=lock if held else None, follow=False)
    except BaseException:
        lock.release()
        await _stop_process(voila)
        shutil.rmtree(runtime, ignore_errors=True)
        raise
    from ..server import tune_collector

    tune_collector()  # as `vocalink serve`: a process of its own, serving connections
    sim = None
    try:
        if lab.token != token:
            log.info("the lab's token is not the one Voila was given: restarting Voila")
            await _stop_process(voila)
            if ready is not None:
                ready.unlink(missing_ok=True)  # the new Voila's kernel, not the old one's
            voila = await start_voila(lab.token)
        if args.demo:
            from ..agent import simulate_devices

            sim = await simulate_devices(args.demo_devices, server_url=lab.url,
                                         state_dir=data_dir / "demo-devices", prefix="demo",
                                         token=lab.token)
        if not await _until_listening(voila, args.host, port, signalled, ready=ready):
            return 0  # Ctrl-C while starting; "stopped" is printed once all is stopped
        query = f"?token={lab.token}" if lab.token else ""
        urls = [url + query for url in page_urls(args.host, port)]
        # First line: the URL, for people and scripts; with its token, as Jupyter prints it.
        print(urls[0], flush=True)
        for url in urls[1:]:
            print(f"  on the LAN: {url}", flush=True)
        if lab.token is None:
            print("  authentication is OFF (--open / VOCALINK_OPEN): whoever reaches the "
                  "page or the server controls the lab", flush=True)
        elif lab.join_code:
            print(f"  devices pair with join code {lab.join_code} (vocalink device --join "
                  "CODE), or wait for approval in the Devices tab", flush=True)
        attached = " (attached to another process's server)" if lab.attached else ""
        print(f"  server: {lab.url}{attached}; name: {lab.name}", flush=True)
        print(f"  devices connect to: {_device_url(lab.url, lab.info)}", flush=True)
        for line in phone_lines(lab.url, lab.info, lab.join_code):
            print(line, flush=True)
        print(f"  data dir: {data_dir}", flush=True)
        if sim is not None:
            print(f"  demo: {len(sim.agents)} simulated devices", flush=True)
        print("  press Ctrl-C to stop", flush=True)
        if not args.no_browser:
            _open_browser(urls[0])
        exited = asyncio.get_running_loop().create_task(voila.wait())
        await asyncio.wait({signalled, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            raise VocalinkError(f"Voila stopped unexpectedly (exit status {exited.result()})")
    finally:
        signalled.cancel()
        await _stop_process(voila)
        if sim is not None:
            await sim.stop()
        await lab.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        print("stopped", flush=True)
    return 0


def _device_url(server_url: str, info: Mapping[str, Any]) -> str:
    """Where devices connect: the server's WebSocket on its first LAN address, if any."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    lan = [a for a in info.get("addresses") or [] if not str(a).startswith("127.")]
    host = lan[0] if lan else parts.hostname
    return f"ws://{host}:{info.get('port') or parts.port}{info.get('ws_path') or '/ws/control'}"


async def _until_listening(proc: asyncio.subprocess.Process, host: str, port: int,
                           signalled: asyncio.Task[None], timeout_s: float = 120.0, *,
                           ready: Path | None = None) -> bool:
    """Wait until Voila accepts connections (True); False if a signal comes first.

    With ``ready``, until that file exists too (the pre-heated kernel has started), or
    `READY_WAIT_S` more: the page works either way, only slower for its first visitor.
    """
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + timeout_s
    if ready is not None:
        ready_by = time.monotonic() + READY_WAIT_S
        while not ready.exists() and time.monotonic() < ready_by:
            if proc.returncode is not None:
                raise VocalinkError(f"Voila exited with status {proc.returncode} (see above)")
            if signalled.done():
                return False
            await asyncio.sleep(0.05)
        if not ready.exists():
            log.warning("the pre-heated kernel has not started within %g s; the page "
                        "starts one of its own", READY_WAIT_S)
    while True:
        if proc.returncode is not None:
            raise VocalinkError(f"Voila exited with status {proc.returncode} (see above)")
        if signalled.done():
            return False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(target, port), 1.0)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise VocalinkError(f"Voila did not listen on {host}:{port} within "
                                    f"{timeout_s:g} s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


async def _stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 20.0) -> None:
    """SIGTERM (Voila then shuts its kernels down), then SIGKILL after ``timeout_s``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("Voila did not stop within %g s; killing it", timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _open_browser(url: str) -> None:
    import threading
    import webbrowser

    threading.Thread(target=webbrowser.open, args=(url,), name="open-browser",
                     daemon=True).start()
