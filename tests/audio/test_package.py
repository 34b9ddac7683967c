"""The audio package: its DSP modules load on first use, and say what they need."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys

    def loaded():
        heavy = ("scipy", "noisereduce", "pyloudnorm", "soxr", "pyrnnoise")
        return {"heavy": sorted(m for m in heavy if m in sys.modules),
                "enhance": "vocalink_lab.audio.enhance" in sys.modules,
                "align": "vocalink_lab.audio.align" in sys.modules}

    from vocalink_lab import audio
    bare = loaded()
    package = audio.enhance
    named = audio.EnhanceParams is package.EnhanceParams and audio.PRESETS is package.PRESETS
    from vocalink_lab.audio.enhance import Progress, enhance, enhance_file, resolve_params
    after_enhance = loaded()
    aligning = audio.Alignment
    after_align = loaded()
    align = audio.align
    from vocalink_lab.audio.align import COARSE_RATE, Alignment, Lag, gcc_phat
    from vocalink_lab.audio.align import align as align_function
    print(json.dumps({"bare": bare, "enhance": after_enhance, "named": named,
                      "package": package.__name__, "path": hasattr(package, "__path__"),
                      "align": after_align, "align_package": align.__name__,
                      "align_path": hasattr(align, "__path__"),
                      "align_all": sorted(align.__all__),
                      "align_named": aligning is Alignment is align.Alignment
                                     and align.align is align_function
                                     and callable(align_function)}))
""")


def test_the_dsp_modules_load_on_first_use() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # A server that only stores files imports `audio` and nothing heavy.
    assert seen["bare"] == {"heavy": [], "enhance": False, "align": False}
    # `audio.enhance` is a package; loading it still imports no DSP library.
    assert seen["enhance"] == {"heavy": [], "enhance": True, "align": False}
    assert seen["package"] == "vocalink_lab.audio.enhance" and seen["path"]
    assert seen["named"]
    # So is `audio.align`: a name of it (`audio.Alignment`) loads it, still nothing heavy.
    assert seen["align"] == {"heavy": [], "enhance": True, "align": True}
    assert seen["align_package"] == "vocalink_lab.audio.align" and seen["align_path"]
    assert seen["align_all"] == ["Alignment", "COARSE_RATE", "Lag", "align", "gcc_phat"]
    assert seen["align_named"]
