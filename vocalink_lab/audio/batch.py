"""Batch enhancement experiments: a parameter grid over many recordings, one DataFrame out.

Each (input, setting) pair is one task, run in any `concurrent.futures.Executor`:
a process pool by default, or a Dask distributed client's executor
(``client.get_executor()``) to spread an experiment over a cluster. A task that
fails (a corrupt file) becomes a row with its ``error``; the others go on.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError, VocalinkError
from .enhance import EnhanceParams, enhance, resolve_params
from .io import FORMATS, load, resample, save
from .metrics import loudness_lufs, si_sdr, snr_estimate, stoi

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METRICS", "enhance_batch", "expand_grid"]

#: Metrics a batch can compute; ``si_sdr`` and ``stoi`` need a clean reference.
METRICS = ("snr", "loudness", "si_sdr", "stoi")
Source = str | Path | tuple[np.ndarray, int]


def expand_grid(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None
                ) -> list[dict[str, Any]]:
    """The settings a grid stands for, each a dict of `resolve_params` arguments.

    Parameters
    ----------
    grid : mapping of str to sequence, or sequence of mappings, optional
        ``{"prop_decrease": [0.5, 1.0], "stationary": [True, False]}`` is the
        Cartesian product (4 settings); a list of dicts is taken as is. A
        ``preset`` key picks the preset the other keys override. ``None`` is
        ``[{"preset": "auto"}]``.

    Returns
    -------
    list of dict

    Raises
    ------
    ParameterError
        Every invalid setting, listed (nothing runs).
    """
    if grid is None:
        settings: list[dict[str, Any]] = [{"preset": "auto"}]
    elif isinstance(grid, Mapping):
        keys = list(grid)
        values = []
        for key in keys:
            options = grid[key]
            if isinstance(options, str | bytes) or not isinstance(options, Iterable):
                raise ParameterError(f"grid['{key}'] must be a list of values, "
                                     f"not {options!r}")
            values.append(list(options))
        settings = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    else:
        settings = [dict(s) for s in grid]
    if not settings:
        raise ParameterError("the grid holds no setting")
    problems = []
    for i, setting in enumerate(settings):
        try:
            _params(setting)
        except ParameterError as exc:
            problems += [f"setting {i} {setting}: {e}" for e in exc.errors]
    if problems:
        raise ParameterError(f"{len(problems)} problem(s) in the grid", errors=problems)
    return settings


def _params(setting: Mapping[str, Any]) -> EnhanceParams:
    rest = dict(setting)
    return resolve_params(rest.pop("preset", None), **rest)


def _sources(inputs: Any) -> dict[str, Source]:
    """Name every input: files by their name, arrays by their position or key."""
    if isinstance(inputs, str | Path):
        root = Path(inputs)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*")
                           if p.is_file() and p.suffix.lower().lstrip(".") in FORMATS)
            if not files:
                raise ParameterError(f"no audio files ({', '.join(FORMATS)}) in {root}")
            return {p.relative_to(root).as_posix(): p for p in files}
        inputs = [root]
    if isinstance(inputs, Mapping):
        return {str(k): _check_source(v, str(k)) for k, v in inputs.items()}
    out: dict[str, Source] = {}
    for i, item in enumerate(inputs):
        name = Path(item).name if isinstance(item, str | Path) else f"input-{i}"
        while name in out:
            name = f"{name}#{i}"
        out[name] = _check_source(item, name)
    if not out:
        raise ParameterError("no inputs")
    return out


def _check_source(item: Any, name: str) -> Source:
    if isinstance(item, str | Path):
        if not Path(item).is_file():
            raise ParameterError(f"input '{name}': no file {item}")
        return Path(item)
    if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int | np.integer)):
        return (np.asarray(item[0]), int(item[1]))
    raise ParameterError(f"input '{name}' must be a file path or an (audio, sample_rate) pair")


def _references(reference: Any, names: Iterable[str]) -> dict[str, Source]:
    if reference is None:
        return {}
    if isinstance(reference, str | Path) and Path(reference).is_dir():
        root = Path(reference)
        return {n: root / n for n in names if (root / n).is_file()}
    if isinstance(reference, Mapping):
        return {str(k): _check_source(v, f"reference {k}") for k, v in reference.items()}
    raise ParameterError("reference must be a folder of clean files named like the inputs, "
                         "or a mapping from input name to a clean file or (audio, rate)")


@dataclass(frozen=True, slots=True)
class _Task:
    name: str
    source: Source
    setting_id: int
    setting: dict[str, Any]
    reference: Source | None
    metrics: tuple[str, ...]
    out_dir: Path | None


def _read(source: Source, sr: int | None = None) -> tuple[np.ndarray, int]:
    if isinstance(source, tuple):
        audio, rate = source
        audio = np.asarray(audio, dtype=np.float32)
        if sr is not None and sr != rate:
            return resample(audio, orig_sr=rate, target_sr=sr), sr
        return audio, rate
    return load(source, sr=sr)


def _run_task(task: _Task) -> dict[str, Any]:
    """One (input, setting): enhance, measure, maybe save. Runs in a worker."""
    row: dict[str, Any] = {"input": task.name, "setting": task.setting_id}
    row.update({f"param_{k}": v for k, v in task.setting.items()})
    try:
        audio, sr = _read(task.source)
        params = _params(task.setting)
        started = time.perf_counter()
        out, report = enhance(audio, sr, params)
        seconds = time.perf_counter() - started
        duration = audio.shape[-1] / sr
        row.update(duration_s=duration, seconds=seconds,
                   rtf=seconds / duration if duration else math.nan)
        if "snr" in task.metrics:
            row["snr_in"] = snr_estimate(audio, sr)
            row["snr_out"] = snr_estimate(out, sr)
        if "loudness" in task.metrics:
            row["lufs_in"] = loudness_lufs(audio, sr)
            row["lufs_out"] = loudness_lufs(out, sr)
        if task.reference is not None:
            clean, _ = _read(task.reference, sr)
            if clean.ndim == 1 and audio.ndim == 2:
                clean = np.broadcast_to(clean, audio.shape)
            if "si_sdr" in task.metrics:
                row["si_sdr_in"] = si_sdr(audio, clean)
                row["si_sdr_out"] = si_sdr(out, clean)
            if "stoi" in task.metrics:
                row["stoi_in"] = stoi(audio, clean, sr)
                row["stoi_out"] = stoi(out, clean, sr)
        row["auto"] = report.to_dict().get("auto")
        if task.out_dir is not None:
            target = task.out_dir / f"{Path(task.name).stem}__s{task.setting_id}.flac"
            save(target, out, sr)
            row["output"] = str(target)
        row["error"] = None
    except (VocalinkError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def enhance_batch(
    inputs: Any,
    *,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
    metrics: Sequence[str] = METRICS,
    reference: Any = None,
    executor: Executor | None = None,
    max_workers: int | None = None,
    out_dir: Path | str | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run an enhancement grid over many recordings and measure every result.

    Parameters
    ----------
    inputs : path, sequence or mapping
        A folder (every audio file under it), a list of files or ``(audio, sr)``
        pairs, or a mapping from a name to either.
    grid : mapping or sequence of mappings, optional
        The settings (see `expand_grid`); default: the ``auto`` preset.
    metrics : sequence of str
        Any of `METRICS`. ``si_sdr`` and ``stoi`` are computed where a clean
        reference is given.
    reference : folder or mapping, optional
        Clean versions of the inputs: a folder holding files named like the
        inputs, or a mapping from input name to a file or ``(audio, sr)``.
    executor : concurrent.futures.Executor, optional
        Where tasks run: by default a new process pool of ``max_workers``
        (closed at the end); a Dask client's ``client.get_executor()`` works too.
    max_workers : int, optional
        Size of the default pool (default: the CPU count).
    out_dir : path, optional
        Also save every enhanced file there (``<input>__s<setting>.flac``).
    progress : bool
        Show a progress bar (``tqdm.auto``: a widget in notebooks).
    on_row : callable, optional
        Called with each row as it completes (e.g. to update a live plot).

    Returns
    -------
    pandas.DataFrame
        One row per input × setting, in input then setting order: ``input``,
        ``setting``, one ``param_<name>`` column per grid key, ``duration_s``,
        ``seconds``, ``rtf`` (processing time over duration), the metrics before
        and after (``snr_in``/``snr_out``, ``lufs_in``/``lufs_out``,
        ``si_sdr_in``/``si_sdr_out``, ``stoi_in``/``stoi_out``) and their gains
        (``*_gain``), ``auto`` (what the auto mode decided), ``output`` and
        ``error`` (None when the task succeeded).

    Raises
    ------
    ParameterError
        Unknown metrics, bad settings or missing inputs, before anything runs.

    Examples
    --------
    >>> df = enhance_batch("data/session-3", grid={"preset": ["auto", "speech"],
    ...                                            "prop_decrease": [0.6, 0.9]})  # doctest: +SKIP
    >>> df.groupby("setting")["snr_gain"].mean()  # doctest: +SKIP
    """
    import pandas as pd
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ParameterError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    settings = expand_grid(grid)
    sources = _sources(inputs)
    references = _references(reference, sources)
    missing = [n for n in references if n not in sources]
    if missing:
        raise ParameterError(f"references for inputs that do not exist: {missing}")
    target_dir = Path(out_dir) if out_dir is not None else None
    if target_dir is not None:
        target_dir.mkdir(parents=True, exist_ok=True)
    tasks = [_Task(name, source, i, setting, references.get(name), tuple(metrics), target_dir)
             for name, source in sources.items() for i, setting in enumerate(settings)]
    owned = executor is None
    if executor is None:
        executor = ProcessPoolExecutor(
            max_workers or min(len(tasks), os.cpu_count() or 1),
            mp_context=multiprocessing.get_context("spawn"))
    rows: dict[int, dict[str, Any]] = {}
    try:
        futures: dict[Future[dict[str, Any]], int] = {
            executor.submit(_run_task, task): n for n, task in enumerate(tasks)}
        with tqdm(total=len(tasks), desc="enhance_batch", unit="task",
                  disable=not progress) as bar:
            for future in as_completed(futures):
                row = future.result()
                rows[futures[future]] = row
                bar.update(1)
                if on_row is not None:
                    on_row(row)
    finally:
        if owned:
            executor.shutdown(wait=True, cancel_futures=True)
    frame = pd.DataFrame([rows[n] for n in range(len(tasks))])
    for metric in ("snr", "lufs", "si_sdr", "stoi"):
        if f"{metric}_in" in frame and f"{metric}_out" in frame:
            frame[f"{metric}_gain"] = frame[f"{metric}_out"] - frame[f"{metric}_in"]
    return frame
