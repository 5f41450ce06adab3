"""Spoken words from eSpeak NG, through ctypes on the library that the `espeakng-loader` wheel ships
(libespeak-ng.so and its voice data: nothing is downloaded, no system package is needed).

eSpeak is initialised once per process in synchronous mode (AUDIO_OUTPUT_SYNCHRONOUS): espeak_Synth
returns when the word is spoken, and a callback collects the 16-bit samples at 22,050 Hz.
The engine keeps state from one utterance to the next (the phase of its pitch flutter, its echo
buffer), so the same utterance can come out a few samples different after different ones: what is
reproducible is a sequence of utterances spoken by a fresh process (see kws_data).
A voice is a language/accent ("en-us", "en-gb-scotland", ...) plus a variant ("m3", "f2",
"klatt4", ...: the files of espeak-ng-data/voices/!v), written "en-us+m3".
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TonyError

SAMPLE_RATE = 22050
# eSpeak's English languages (espeak-ng-data/lang/gmw/en*), Shavian script left out
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Utterance:
    """One word as eSpeak should say it: voice "accent+variant", rate in words per minute (80-450),
    pitch and pitch range (0-100), and the seed of eSpeak's random generator: the same utterance
    gives the same samples whatever was said before."""
    word: str
    voice: str
    rate: int = 175
    pitch: int = 50
    range: int = 50
    seed: int = 0  # of eSpeak's own random generator (it varies durations and the voice's noise)


def _loader():
    try:
        import espeakng_loader
    except ImportError:
        raise TonyError("speech synthesis needs eSpeak NG",
                        hint="pip install 'tony[train]' (espeakng-loader)") from None
    return espeakng_loader


def engine_version() -> str:
    """The version of the wheel that ships the library and voices (part of every cache key)."""
    from importlib.metadata import version

    return version("espeakng-loader")


# variants that crash libespeak-ng 1.52 on some English words (found by speaking every word of
# tony.models.kws_data in every accent with random rates and pitches, one process per variant)
UNSTABLE = ("Demonic", "rob")


def variants() -> tuple[str, ...]:
    """The voice variants shipped with the library (sorted; names with spaces and UNSTABLE left out)."""
    d = Path(_loader().get_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in d.iterdir() if p.is_file() and " " not in p.name and p.name not in UNSTABLE))


class Speaker:
    """The process's eSpeak NG engine (one per process: the library keeps global state)."""
    _instance: "Speaker | None" = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._init()
        return cls._instance

    def _init(self):
        loader = _loader()
        lib = ctypes.CDLL(loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, loader.get_data_path().encode(), 0)
        if rate != SAMPLE_RATE:
            raise TonyError(f"eSpeak NG did not start (espeak_Initialize returned {rate})",
                            hint="reinstall espeakng-loader")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.libc = lib, ctypes.CDLL(None)
        self.libc.srand.argtypes = [ctypes.c_uint]

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: go on synthesizing

    def say(self, u: Utterance) -> np.ndarray:
        """The samples (int16, 22,050 Hz) of one utterance, leading and trailing silence included."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(u.voice.encode()) != 0:
            raise TonyError(f"eSpeak NG has no voice {u.voice!r}")
        for name, value in (("rate", u.rate), ("pitch", u.pitch), ("range", u.range), ("volume", 100)):
            lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        lib.espeak_ng_SetRandSeed(u.seed)
        self.libc.srand(u.seed & 0x7FFFFFFF)  # the noise of breathy voices comes from libc's rand()
        self._chunks.clear()
        text = u.word.encode()
        err = lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise TonyError(f"eSpeak NG could not say {u.word!r} with voice {u.voice!r} (error {err})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
