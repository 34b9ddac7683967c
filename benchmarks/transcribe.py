"""Transcribe: word error rate, real-time factor on one core, peak memory; vs faster-whisper.

The set (`_speech_set.py`): utterances of two or three Harvard sentences read by six
espeak-ng voices (16 kHz mono WAV, 6 to 10 s each), every one twice: clean, and mixed
at 10 dB SNR with one of six noises (babble, keyboard, fan, hum, pink, white). Full
run: 24 utterances, 48 files, 928 words; ``--quick``: 4 utterances, 8 files.

Three configurations transcribe the same files, each in its own child process (this
script with ``--child``) pinned to one core (``os.sched_setaffinity``), with one
CTranslate2 thread, whisper "base" in int8, the language given (``--language``, "en"):

- ``plain faster-whisper`` (the baseline): ``WhisperModel(folder, device="cpu",
  compute_type="int8", cpu_threads=1).transcribe(path, ...)`` with the decoding options
  of our engine (``beam_size=engine.BEAM_SIZE``, ``word_timestamps=True``,
  ``vad_filter=True``, ``condition_on_previous_text=False``), on the folder
  ``model.prepare_model(model.locate_model())`` gives (the model ours loads);
- ``ours``: ``transcribe_file(path, enhance=False)``;
- ``ours + enhance``: ``transcribe_file(path, enhance=True)``: the auto enhancement
  (``enhance_file``, backend "auto") into a temporary file, then the same.

Each child loads its model and transcribes a warm-up file first (not timed); it runs on
the core that was idlest just before it started (the machine may be shared). Per file,
CPU seconds (user + system, all the child's threads) and wall seconds of the call; RTF
= CPU seconds / audio seconds on that one core (wall beside it: the same when the core
is not shared; the enhancement's time included in ``ours + enhance``); the child's peak
RSS (VmHWM, the model included) at its end. WER with jiwer over all words of a subset (clean, noisy,
all), after `_speech_set.normalise` (lower case, numbers spelt out, no punctuation).

Memory on long files: a 10- and a 60-minute file (``--quick``: 1 and 2), an utterance
every 25 s over quiet pink noise; each transcribed whole in a fresh child by ours (the
engine's default ``enhance``) and by plain faster-whisper (which decodes the whole file
into memory: it grows, that is the point); peak RSS of each child, and the WER on it.

Goals: WER of ours (the engine's default ``enhance``) on all files <= plain's + 0.5
percentage point (`GOAL_WER_PP`: both run the same model with the same options on the
same samples, so they should agree; the tolerance is about 5 words of the full set's
928, for a word flipped by a different decoding path, not a lost or cut segment);
its RTF (CPU seconds, one core) <= 0.3; its peak RSS at 60 minutes <= 1.1 x at 10
minutes (`GOAL_MEMORY_RATIO`; whole process, the model included: holding the extra 50
minutes as float32 would add 183 MiB). Whether enhancement helps reading is reported
(clean, noisy, all; per noise), not judged: it is what the default is chosen from.

Usage: ``python benchmarks/transcribe.py`` (about 15 minutes on 2 cores),
``--quick`` (about 80 s; the memory goal is not judged at 1 and 2 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import PYTHON, Child, MiB, children, table

os.environ["HF_HUB_OFFLINE"] = "1"  # never download anything (children inherit it)

PLAIN, OURS, ENHANCED = "plain faster-whisper", "ours", "ours + enhance"
CONFIGS = (PLAIN, OURS, ENHANCED)
GOAL_WER_PP = 0.5
GOAL_RTF = 0.3
GOAL_MEMORY_RATIO = 1.1
SR = 16000


# -- the child: one configuration on a list of files -----------------------------------------


def _orphan_watch() -> None:
    """End this child when its parent is gone (the parent was killed, not stopped)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _vm(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1)) * 1024


def child(config: str, spec_path: str) -> None:
    _orphan_watch()
    spec = json.loads(Path(spec_path).read_text())
    core = int(spec["core"])
    os.sched_setaffinity(0, {core})  # one core: the real-time factor is per core
    language = spec["language"] or None

    from vocalink_lab.audio.transcribe import engine

    if config == PLAIN:
        from faster_whisper import WhisperModel

        whisper = WhisperModel(spec["folder"], device="cpu", compute_type="int8",
                               cpu_threads=1, local_files_only=True)

        def run(path: str) -> str:
            segments, _ = whisper.transcribe(
                path, language=language, task="transcribe", beam_size=engine.BEAM_SIZE,
                word_timestamps=True, vad_filter=True, condition_on_previous_text=False)
            return " ".join(s.text.strip() for s in segments)
    else:
        from vocalink_lab.audio.transcribe.model import load_model

        load_model()  # what transcribe_file loads (cached per process)
        enhance = config == ENHANCED

        def run(path: str) -> str:
            return engine.transcribe_file(path, language=language, enhance=enhance,
                                          work_dir=Path(spec["work_dir"])).text

    if spec["warm"]:
        run(spec["warm"])
    loaded = _vm("VmRSS")
    files = []
    for path in spec["files"]:
        wall, cpu = time.perf_counter(), time.process_time()
        text = run(path)
        files.append({"path": path, "text": text, "wall": time.perf_counter() - wall,
                      "cpu": time.process_time() - cpu})
    print(json.dumps({"files": files, "loaded": loaded, "peak": _vm("VmHWM"), "core": core}),
          flush=True)


# -- the parent --------------------------------------------------------------------------------


def idlest_core(sample_s: float = 0.5) -> int:
    """The usable core that was idle longest over ``sample_s`` (the machine may be shared)."""
    cores = sorted(os.sched_getaffinity(0))

    def idle() -> dict[int, int]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
        return out

    before = idle()
    time.sleep(sample_s)
    after = idle()
    return max(cores, key=lambda c: after.get(c, 0) - before.get(c, 0))


@dataclass
class Result:
    texts: dict[str, str]  # path -> hypothesis
    wall: float
    cpu: float
    loaded_mib: float
    peak_mib: float
    core: int


def measure(config: str, files: list[Path], *, folder: Path, warm: Path | None,
            language: str, workdir: Path, label: str, timeout: float) -> Result:
    spec = workdir / f"spec-{label}.json"
    spec.write_text(json.dumps({"files": [str(p) for p in files], "folder": str(folder),
                                "warm": None if warm is None else str(warm),
                                "language": language, "work_dir": str(workdir),
                                "core": idlest_core()}))
    with children() as started:
        proc = Child(f"{config} ({label})", [PYTHON, __file__, "--child", config, str(spec)],
                     log_path=workdir / f"{label}.log")
        started.append(proc)
        line = proc.readline(timeout)
        proc.proc.wait(30)
    got = json.loads(line)
    return Result({f["path"]: f["text"] for f in got["files"]},
                  sum(f["wall"] for f in got["files"]), sum(f["cpu"] for f in got["files"]),
                  got["loaded"] / MiB, got["peak"] / MiB, int(got["core"]))


def wer(pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """Corpus WER (%) of (reference, hypothesis) pairs, normalised; and the reference words."""
    import jiwer
    from _speech_set import normalise

    refs = [normalise(r) for r, _ in pairs]
    hyps = [normalise(h) for _, h in pairs]
    out = jiwer.process_words(refs, hyps)
    return 100.0 * out.wer, sum(len(r.split()) for r in refs)


def file_errors(pairs: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Per pair: word errors (substitutions + deletions + insertions) and reference words."""
    import jiwer
    from _speech_set import normalise

    errors, words = [], []
    for ref, hyp in pairs:
        out = jiwer.process_words(normalise(ref), normalise(hyp))
        errors.append(out.substitutions + out.deletions + out.insertions)
        words.append(len(normalise(ref).split()))
    return errors, words


def bootstrap_pp(errors_a: list[int], errors_b: list[int], words: list[int],
                 rounds: int = 2000) -> tuple[float, float]:
    """95 % interval (pp) of WER(a) - WER(b) over files resampled with replacement (seeded)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b, w = (np.asarray(v, dtype=float) for v in (errors_a, errors_b, words))
    picks = rng.integers(0, w.size, size=(rounds, w.size))
    diff = 100.0 * (a[picks].sum(1) - b[picks].sum(1)) / np.maximum(w[picks].sum(1), 1.0)
    low, high = np.percentile(diff, [2.5, 97.5])
    return float(low), float(high)


def unavailable(reason: str) -> int:
    print(table(["needed", "state"], [["espeak-ng, faster-whisper, the model", reason]]))
    print(f"goal: WER, RTF and memory against plain faster-whisper: not measured ({reason})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=24,
                        help="utterances of the set, each clean and noisy (default 24)")
    parser.add_argument("--minutes", type=float, nargs=2, default=[10.0, 60.0],
                        metavar=("SHORT", "LONG"), help="long-file lengths (default 10 60)")
    parser.add_argument("--language", default="en",
                        help="given to every configuration ('' to detect; default en)")
    parser.add_argument("--skip-memory", action="store_true", help="no long files")
    parser.add_argument("--texts", type=Path, metavar="JSON",
                        help="write every reference and hypothesis there")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per child run")
    parser.add_argument("--quick", action="store_true",
                        help="4 utterances, 1- and 2-minute files: a smoke test")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.quick:
        args.utterances, args.minutes = 4, [1.0, 2.0]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # children stopped on the way out

    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable)  "
          f"{platform.processor() or platform.machine()}  Python {platform.python_version()}")
    import _heldout

    if not _heldout.available():
        return unavailable("espeak-ng is not installed")
    from vocalink_lab.audio.transcribe import engine
    from vocalink_lab.audio.transcribe.model import locate_model, prepare_model, require_engine
    from vocalink_lab.errors import TranscriptionUnavailable

    try:
        source = require_engine()
        folder = prepare_model(source)
    except TranscriptionUnavailable as exc:
        return unavailable(str(exc))
    assert locate_model() == source
    default_enhance = bool(inspect.signature(engine.transcribe_file).parameters["enhance"].default)
    print(f"model: {source.describe()}; folder {folder}")

    workdir = Path(tempfile.mkdtemp(prefix="vocalink-transcribe-"))
    try:
        return 0 if run(args, workdir, folder, default_enhance) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path, folder: Path, default_enhance: bool) -> bool:
    import _speech_set

    began = time.perf_counter()
    clips = _speech_set.clips(args.utterances)
    paths = _speech_set.write_clips(workdir, clips)
    warm_utt = _speech_set.utterances(args.utterances + 1)[-1]
    warm = workdir / "warm.wav"
    import soundfile as sf

    sf.write(warm, warm_utt.audio[:4 * SR], SR, subtype="PCM_16")
    audio_s = sum(c.audio.size for c in clips) / SR
    print(f"set: {len(clips)} files ({args.utterances} utterances, clean and at "
          f"{_speech_set.SNR_DB:g} dB SNR), {audio_s:.0f} s of audio, "
          f"{sum(len(_speech_set.normalise(c.text).split()) for c in clips)} words; made in "
          f"{time.perf_counter() - began:.1f} s", flush=True)
    long_paths: dict[float, tuple[Path, str]] = {}
    if not args.skip_memory:
        said = _speech_set.utterances(args.utterances)
        for minutes in args.minutes:
            began = time.perf_counter()
            path = workdir / f"long-{minutes:g}min.wav"
            long_paths[minutes] = (path, _speech_set.long_file(path, minutes, said))
            print(f"long file: {minutes:g} min ({path.stat().st_size / MiB:.0f} MiB), made in "
                  f"{time.perf_counter() - began:.1f} s", flush=True)

    results: dict[str, Result] = {}
    for config in CONFIGS:
        began = time.perf_counter()
        results[config] = measure(config, paths, folder=folder, warm=warm,
                                  language=args.language, workdir=workdir,
                                  label=config.replace(" ", "").replace("+", "-"),
                                  timeout=args.timeout_s)
        r = results[config]
        print(f"  {config:<21} RTF {r.cpu / audio_s:.3f} (CPU), {r.wall / audio_s:.3f} (wall); "
              f"peak RSS {r.peak_mib:.0f} MiB; core {r.core}; child "
              f"{time.perf_counter() - began:.0f} s",
              flush=True)
    long_results: dict[tuple[str, float], Result] = {}
    ours_long = ENHANCED if default_enhance else OURS
    for minutes, (path, _) in long_paths.items():
        for config in (ours_long, PLAIN):
            began = time.perf_counter()
            r = measure(config, [path], folder=folder, warm=None, language=args.language,
                        workdir=workdir, label=f"long{minutes:g}-{config.split()[0]}",
                        timeout=args.timeout_s)
            long_results[(config, minutes)] = r
            print(f"  {minutes:>4g} min  {config:<21} peak RSS {r.peak_mib:.0f} MiB, "
                  f"wall {r.wall:.0f} s; core {r.core}; child {time.perf_counter() - began:.0f} s",
                  flush=True)
    if args.texts:
        dump = {"files": [{"file": p.name, "noise": c.noise, "voice": c.utterance.voice,
                           "reference": c.text,
                           **{cfg: results[cfg].texts[str(p)] for cfg in CONFIGS}}
                          for c, p in zip(clips, paths, strict=True)],
                "long": [{"minutes": m, "config": cfg, "reference": long_paths[m][1],
                          "hypothesis": r.texts[str(long_paths[m][0])]}
                         for (cfg, m), r in long_results.items()]}
        args.texts.write_text(json.dumps(dump, indent=1))
    return report(args, clips, paths, results, long_paths, long_results, default_enhance,
                  audio_s)


def report(args: argparse.Namespace, clips: list[Any], paths: list[Path],
           results: dict[str, Result], long_paths: dict[float, tuple[Path, str]],
           long_results: dict[tuple[str, float], Result], default_enhance: bool,
           audio_s: float) -> bool:
    from _heldout import NOISES

    def subset_wer(config: str, keep: Any) -> tuple[float, int]:
        texts = results[config].texts
        return wer([(c.text, texts[str(p)]) for c, p in zip(clips, paths, strict=True)
                    if keep(c)])

    subsets = {"clean": lambda c: not c.noisy, "noisy (10 dB)": lambda c: c.noisy,
               "all": lambda c: True}
    base = results[PLAIN]
    wers = {(cfg, name): subset_wer(cfg, keep)[0] for cfg in CONFIGS
            for name, keep in subsets.items()}
    rows: list[list[object]] = []
    for cfg in CONFIGS:
        r = results[cfg]
        rows.append([cfg + (" (default)" if (cfg == ENHANCED) == default_enhance
                            and cfg != PLAIN else ""),
                     *[f"{wers[(cfg, s)]:.1f}" for s in subsets],
                     f"{wers[(cfg, 'all')] - wers[(PLAIN, 'all')]:+.1f}",
                     f"{r.cpu / audio_s:.3f}", f"{r.wall / audio_s:.3f}",
                     f"{r.cpu / base.cpu:.2f}", f"{r.peak_mib:.0f}",
                     f"{r.peak_mib / base.peak_mib:.2f}"])
    print()
    print(f"WER (%) on {len(clips)} files ({audio_s:.0f} s; clean and at 10 dB SNR), whisper "
          f"base int8, language {args.language or 'detected'}, beam "
          f"{_beam()}, VAD on; each configuration in its own child pinned to one core "
          "(cpu_threads=1). RTF = the child's CPU seconds (user + system, all its threads) / "
          "audio seconds, after a warm-up file (wall: elapsed, the same when the core is not "
          "shared); ours + enhance includes the enhancement. Peak "
          "RSS = the child's VmHWM, model included. Ratios against plain faster-whisper.")
    print(table(["configuration", "WER clean", "WER noisy", "WER all", "all vs plain (pp)",
                 "RTF CPU", "RTF wall", "CPU / plain", "peak RSS MiB", "RSS / plain"],
                rows))

    # Does enhancement help reading? Per subset and per noise, with and without.
    kinds = {"clean": lambda c: not c.noisy}
    kinds.update({f"  {n} 10 dB": (lambda c, n=n: c.noise == n) for n in NOISES})
    kinds.update({"noisy (10 dB)": lambda c: c.noisy, "all": lambda c: True})
    per_file = {cfg: file_errors([(c.text, results[cfg].texts[str(p)])
                                  for c, p in zip(clips, paths, strict=True)])
                for cfg in CONFIGS}
    rows = []
    intervals = {}
    for name, keep in kinds.items():
        if not any(keep(c) for c in clips):
            continue
        (p, words), (o, _), (e, _) = (subset_wer(cfg, keep) for cfg in CONFIGS)
        chosen_files = [i for i, c in enumerate(clips) if keep(c)]
        low, high = intervals[name.strip()] = bootstrap_pp(
            *[[per_file[cfg][0][i] for i in chosen_files] for cfg in (ENHANCED, OURS)],
            [per_file[OURS][1][i] for i in chosen_files])
        verdict = ("same" if e == o else "enhanced" if e < o else "not enhanced") + (
            "" if e == o or high < 0 or low > 0 else " (within noise)")
        rows.append([name, len(chosen_files), words, f"{p:.1f}", f"{o:.1f}", f"{e:.1f}",
                     f"{e - o:+.1f}", f"{low:+.1f} .. {high:+.1f}", verdict])
    print()
    print("Enhancement before transcription: WER (%) with and without (ours), plain "
          "faster-whisper for reference; enhanced - not (pp) < 0: enhancement helps reading; "
          "95 % interval of that difference by bootstrap over the subset's files (2,000 "
          "resamplings): when it spans 0, the difference is within noise")
    print(table(["subset", "files", "words", "plain", "ours", "ours + enhance",
                 "enhanced - not (pp)", "95 % interval (pp)", "better"], rows))

    ok = True
    chosen = ENHANCED if default_enhance else OURS
    ours_all, plain_all = wers[(chosen, "all")], wers[(PLAIN, "all")]
    ok_wer = ours_all <= plain_all + GOAL_WER_PP
    print(f"goal: WER of ours (enhance={default_enhance}, the engine's default) <= plain "
          f"faster-whisper's + {GOAL_WER_PP:g} pp on all {len(clips)} files: {ours_all:.2f} % vs "
          f"{plain_all:.2f} % (clean {wers[(chosen, 'clean')]:.1f} vs "
          f"{wers[(PLAIN, 'clean')]:.1f}, noisy {wers[(chosen, 'noisy (10 dB)')]:.1f} vs "
          f"{wers[(PLAIN, 'noisy (10 dB)')]:.1f}) -> {'PASS' if ok_wer else 'FAIL'}")
    rtf = results[chosen].cpu / audio_s
    ok_rtf = rtf <= GOAL_RTF
    other = ENHANCED if chosen == OURS else OURS
    print(f"goal: RTF of ours (enhance={default_enhance}) <= {GOAL_RTF:g} (CPU seconds, one "
          f"core, base int8): {rtf:.3f} (wall {results[chosen].wall / audio_s:.3f}; plain "
          f"{base.cpu / audio_s:.3f}; {other} {results[other].cpu / audio_s:.3f}) "
          f"-> {'PASS' if ok_rtf else 'FAIL'}")
    ok = ok_wer and ok_rtf
    better = {s: (wers[(ENHANCED, s)], wers[(OURS, s)]) for s in subsets}
    helps = better["all"][0] < better["all"][1]
    print("enhancement for reading (not a goal): " + "; ".join(
        f"{s} {e:.1f} % enhanced vs {o:.1f} % not ({e - o:+.1f} pp, 95 % interval "
        f"{intervals[s][0]:+.1f} .. {intervals[s][1]:+.1f})"
        for s, (e, o) in better.items())
        + f" -> reads better {'with' if helps else 'without'} enhancement overall; "
        f"the engine's default is enhance={default_enhance}"
        + ("" if helps == default_enhance else " (the measurement says the other way)"))

    if long_paths:
        ok = memory_report(args, long_paths, long_results, chosen) and ok
    else:
        print("goal: memory flat from 10 to 60 min: not measured (--skip-memory)")
    return ok


def memory_report(args: argparse.Namespace, long_paths: dict[float, tuple[Path, str]],
                  long_results: dict[tuple[str, float], Result], chosen: str) -> bool:
    import _speech_set

    short, long = sorted(long_paths)
    rows: list[list[object]] = []
    for minutes in (short, long):
        path, text = long_paths[minutes]
        base = long_results[(PLAIN, minutes)]
        for cfg in (chosen, PLAIN):
            r = long_results[(cfg, minutes)]
            rows.append([cfg, f"{minutes:g}", f"{r.peak_mib:.0f}", f"{r.loaded_mib:.0f}",
                         f"{r.peak_mib / base.peak_mib:.2f}",
                         f"{r.peak_mib / long_results[(cfg, short)].peak_mib:.2f}",
                         f"{r.cpu / (60 * minutes):.3f}",
                         f"{wer([(text, r.texts[str(path)])])[0]:.1f}"])
    print()
    print(f"Long files: an utterance every {_speech_set.LONG_PERIOD_S:g} s over quiet pink "
          "noise, transcribed whole in a fresh child each (one core); peak RSS = VmHWM, the "
          "model included; loaded = RSS after loading the model; RTF (CPU) on sparse speech "
          "(VAD skips the rest)")
    print(table(["configuration", "minutes", "peak RSS MiB", "loaded MiB", "RSS / plain",
                 f"RSS / at {short:g} min", "RTF CPU", "WER %"], rows))
    ours = [long_results[(chosen, m)].peak_mib for m in (short, long)]
    plain = [long_results[(PLAIN, m)].peak_mib for m in (short, long)]
    summary = (f"ours {ours[1]:.0f} vs {ours[0]:.0f} MiB ({ours[1] / ours[0]:.3f} x, "
               f"{ours[1] - ours[0]:+.0f} MiB); plain faster-whisper {plain[1]:.0f} vs "
               f"{plain[0]:.0f} MiB ({plain[1] / plain[0]:.2f} x, {plain[1] - plain[0]:+.0f} MiB)")
    if args.quick:
        from vocalink_lab.audio.transcribe.engine import WINDOW_S

        print(f"goal: memory flat from 10 to 60 min: not measured (quick sizes, {short:g} and "
              f"{long:g} min; ours in windows of {WINDOW_S:g} s: {summary})")
        return True
    ok = ours[1] <= GOAL_MEMORY_RATIO * ours[0]
    print(f"goal: peak RSS of ours at {long:g} min <= {GOAL_MEMORY_RATIO:g} x at {short:g} min "
          f"(memory flat): {summary} -> {'PASS' if ok else 'FAIL'}")
    return ok


def _beam() -> int:
    from vocalink_lab.audio.transcribe import engine

    return int(engine.BEAM_SIZE)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
