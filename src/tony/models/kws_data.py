"""A keyword-spotting data set made offline: words spoken by eSpeak NG (tony.models.speech), mixed
into one-second clips with noise, turned into the MLPerf Tiny KWS features (49 x 10 MFCC).

Twelve classes as in the Speech Commands task of MLPerf Tiny: ten keywords, "_silence_" (noise
only) and "_unknown_" (other words). Every sample is drawn from its own seeded generator
(seed, split, index), so a sample does not depend on the others nor on the order of generation.

Voices: 8 English accents x about 100 eSpeak variants. The variants are shuffled with the seed and
split into test, validation and training pools; a voice (accent+variant) is in one split only, so
the test split is voice-disjoint from training (and so is validation, carved from the training
pool). Per sample: voice, speaking rate 110-240 wpm, pitch 15-85, pitch range 20-90, level
-26 to -2 dBFS, a random place in the second (the whole second is a random time shift), and
(85% of the time) white, pink, brown noise or mains hum at 5-35 dB SNR.

Features (`mfcc`), as the MLPerf Tiny KWS reference computes them with tf.signal: 16 kHz, 40 ms
Hann windows every 20 ms (49 frames, no centering), magnitude spectrum, 40 mel bands (HTK mel,
20-4000 Hz), natural log (+1e-6), DCT-II (orthonormal), first 10 coefficients. Computed with
librosa (a maintained DSP library; its soxr resampler takes eSpeak's 22,050 Hz to 16 kHz). The
one difference from the reference: the FFT is 640 points (the window length) instead of 1024.

eSpeak carries state from one word to the next (the phase of its pitch flutter, its echo), so
each split is spoken by a fresh process, in index order: the set is the same bit for bit on every
run and every machine with the same wheels. The set is cached under ~/.cache/tony/kws/ (or
$TONY_CACHE_DIR/kws), named by a hash of everything that determines it (the spec, the feature and
generation version, the eSpeak wheel's version and its variant list).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..build import exclusive
from ..errors import InputError, TonyError
from .speech import ACCENTS, SAMPLE_RATE, Speaker, Utterance, engine_version, variants

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
CLASSES = KEYWORDS + (SILENCE, UNKNOWN)
# the other words of Speech Commands v2
UNKNOWN_WORDS = ("backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy",
                 "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two",
                 "visual", "wow", "zero")
RATE = 16000
CLIP = RATE  # one second
FRAMES, COEFFS = 49, 10
IN_SHAPE = (1, 1, FRAMES, COEFFS)
VERSION = 1  # of the generation and feature code: part of the cache key
SPLITS = ("train", "val", "test")
NOISES = ("white", "pink", "brown", "hum")


@dataclass(frozen=True)
class KwsSpec:
    """What the data set is made of; equal specs give equal data sets (bit for bit)."""
    seed: int = 0
    train: int = 6000
    val: int = 1200
    test: int = 2400
    test_voices: float = 0.25  # share of the variants held out for the test split
    val_voices: float = 0.10   # share held out for validation

    def check(self) -> "KwsSpec":
        if min(self.train, self.val, self.test) < len(CLASSES):
            raise InputError(f"every split needs at least {len(CLASSES)} samples (one per class)")
        if not (0 < self.test_voices and 0 < self.val_voices and self.test_voices + self.val_voices < 0.9):
            raise InputError("test_voices and val_voices must be positive shares that leave voices for training")
        return self

    def key(self) -> str:
        facts = {"spec": asdict(self), "version": VERSION, "espeakng_loader": engine_version(),
                 "variants": variants(), "accents": ACCENTS}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """Everything that decides one clip: the label, the utterance (None for silence) and the mix."""
    label: int
    utterance: Utterance | None
    level: float   # peak of the speech, full scale = 1
    start: float   # where the word begins, as a share of the free room in the second
    noise: str     # one of NOISES, or "none"
    snr_db: float  # speech / noise (for silence: noise level in dBFS)
    seed: int


def voice_split(spec: KwsSpec) -> dict[str, tuple[str, ...]]:
    """split -> its voices ("accent+variant"); the variants of different splits are disjoint."""
    var = list(variants())
    np.random.default_rng(spec.seed).shuffle(var)
    n_test = max(1, round(spec.test_voices * len(var)))
    n_val = max(1, round(spec.val_voices * len(var)))
    pools = {"test": var[:n_test], "val": var[n_test:n_test + n_val], "train": var[n_test + n_val:]}
    return {s: tuple(f"{a}+{v}" for v in sorted(p) for a in ACCENTS) for s, p in pools.items()}


def plan(spec: KwsSpec, split: str, i: int, voices: tuple[str, ...]) -> Plan:
    """The i-th sample of `split` (classes in turn: i % 12, so any prefix is balanced)."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), i])
    label = i % len(CLASSES)
    noise = str(rng.choice(NOISES)) if label == len(KEYWORDS) or rng.random() < 0.85 else "none"
    if CLASSES[label] == SILENCE:
        return Plan(label, None, 0.0, 0.0, noise, float(rng.uniform(-70, -20)), int(rng.integers(2**31)))
    word = CLASSES[label] if label < len(KEYWORDS) else str(rng.choice(UNKNOWN_WORDS))
    u = Utterance(word, str(rng.choice(voices)), rate=int(rng.integers(110, 241)), pitch=int(rng.integers(15, 86)),
                  range=int(rng.integers(20, 91)), seed=int(rng.integers(2**31)))
    return Plan(label, u, float(10 ** rng.uniform(-26 / 20, -2 / 20)), float(rng.random()), noise,
                float(rng.uniform(5, 35)), int(rng.integers(2**31)))


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of one kind: white, pink (1/f power), brown (1/f^2) or 50/60 Hz hum."""
    if kind == "hum":
        t = np.arange(n) / RATE
        f0, phase = rng.choice([50.0, 60.0]), rng.uniform(0, 2 * np.pi, 5)
        v = sum(np.sin(2 * np.pi * f0 * (k + 1) * t + phase[k]) / (k + 1) for k in range(5))
        v = v + 0.05 * rng.standard_normal(n)
    else:
        v = rng.standard_normal(n)
        if kind != "white":
            spec = np.fft.rfft(v)
            f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 1.0)
            spec /= f ** (0.5 if kind == "pink" else 1.0)
            v = np.fft.irfft(spec, n)
    return v / (np.sqrt(np.mean(v**2)) + 1e-12)


def _speech(u: Utterance) -> np.ndarray:
    """The word at 16 kHz, leading and trailing silence trimmed, peak 1."""
    import librosa

    raw = Speaker().say(u).astype(np.float32) / 32768.0
    y = librosa.resample(raw, orig_sr=SAMPLE_RATE, target_sr=RATE, res_type="soxr_hq")
    y, _ = librosa.effects.trim(y, top_db=40)
    return y / (np.abs(y).max() + 1e-9)


def render(p: Plan) -> np.ndarray:
    """One second of audio (float32, 16 kHz, full scale = 1) for one plan."""
    rng = np.random.default_rng(p.seed)
    clip = np.zeros(CLIP)
    if p.utterance is not None:
        y = _speech(p.utterance) * p.level
        if len(y) > CLIP:  # a very slow word: keep a random second of it
            off = int(p.start * (len(y) - CLIP))
            y = y[off:off + CLIP]
        at = int(p.start * (CLIP - len(y)))
        clip[at:at + len(y)] = y
        ref = np.sqrt(np.mean(y**2))
        noise_rms = ref / 10 ** (p.snr_db / 20)
    else:
        noise_rms = 10 ** (p.snr_db / 20)
    if p.noise != "none":
        clip += noise_rms * _noise(p.noise, CLIP, rng)
    clip += 1e-4 * rng.standard_normal(CLIP)  # the microphone's own floor
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def mfcc(audio: np.ndarray) -> np.ndarray:
    """MLPerf Tiny KWS features of 1 s clips at 16 kHz: (N, 16000) -> (N, 1, 49, 10) float32."""
    import librosa

    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] != CLIP:
        raise InputError(f"mfcc needs a stack of {CLIP}-sample clips, got shape {audio.shape}")
    mel = librosa.feature.melspectrogram(y=audio, sr=RATE, n_fft=640, hop_length=320, win_length=640,
                                         window="hann", center=False, power=1.0, n_mels=40, fmin=20.0,
                                         fmax=4000.0, htk=True, norm=None)
    c = librosa.feature.mfcc(S=np.log(mel + 1e-6), n_mfcc=COEFFS, dct_type=2, norm="ortho")
    return np.ascontiguousarray(c.transpose(0, 2, 1)[:, None]).astype(np.float32)


def cache_dir() -> Path:
    return Path(os.environ.get("TONY_CACHE_DIR") or Path.home() / ".cache" / "tony") / "kws"


def _split(spec: KwsSpec, split: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of one split, spoken in index order (run in a fresh process)."""
    from tqdm import tqdm

    voices = voice_split(spec)[split]
    n = getattr(spec, split)
    audio = np.empty((n, CLIP), np.float32)
    labels = np.empty(n, np.int64)
    pos = SPLITS.index(split)
    for i in tqdm(range(n), desc=f"kws {split}: speaking", unit="clip", disable=not progress, position=pos,
                  leave=False):
        p = plan(spec, split, i, voices)
        audio[i], labels[i] = render(p), p.label
    feats = [mfcc(audio[s:s + 500]) for s in range(0, n, 500)]
    return np.concatenate(feats), labels


def _generate(spec: KwsSpec, progress: bool) -> dict[str, np.ndarray]:
    """Each split in a fresh process (eSpeak's state then starts the same every time), two at once."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as ex:
        futures = {s: ex.submit(_split, spec, s, progress) for s in ("train", "test", "val")}
        out: dict[str, np.ndarray] = {}
        for s in SPLITS:
            try:
                out[f"x_{s}"], out[f"y_{s}"] = futures[s].result()
            except BrokenProcessPool:
                raise TonyError(f"the speech synthesizer died while speaking the {s} split",
                                hint="a voice variant may crash this eSpeak NG build; add it to "
                                     "tony.models.speech.UNSTABLE") from None
    return out


def dataset(spec: KwsSpec = KwsSpec(), *, progress: bool = True, cache: bool = True) -> dict[str, np.ndarray]:
    """x_train, y_train, x_val, y_val, x_test, y_test (x: (N, 1, 49, 10) float32 MFCC; y: int64 in
    [0, 12)), from the cache when it holds this spec, else synthesized and cached."""
    spec = spec.check()
    path = cache_dir() / f"kws-{spec.key()}.npz"
    if not cache:
        return _generate(spec, progress)
    data = _load(path)
    if data is not None:
        return data
    _check_writable(path.parent)  # before minutes of synthesis, not after
    # one process speaks a spec at a time: another that wants it (a second tony example, a parallel
    # test worker) waits and then reads what the first wrote, instead of speaking it again
    with exclusive(path.with_name(f"{path.name}.lock")):
        data = _load(path)
        if data is None:
            data = _generate(spec, progress)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            try:
                np.savez(tmp, **data)
                os.replace(tmp, path)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise _cache_error(path.parent, e) from None
    return data


def _load(path: Path) -> dict[str, np.ndarray] | None:
    """The cached data set at `path`, or None when there is none (or it is damaged: made again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        return None


def _cache_error(folder: Path, e: OSError) -> TonyError:
    return TonyError(f"cannot write the data-set cache ({e.strerror or e})", where=str(folder),
                     hint="set TONY_CACHE_DIR to a writable folder")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise _cache_error(folder, e) from None
