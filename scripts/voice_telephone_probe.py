"""Does the voice expert hear a telephone line? A validation probe (RAVDESS actors 01-06 only).

    python scripts/voice_telephone_probe.py [--shared ../shared] [--work /tmp/lpgnet-telephone]

Call-centre audio is narrow-band: 8 kHz, about 300-3400 Hz. This writes telephone copies of RAVDESS
actors 01-06 (resampled to 8 kHz with soxr, then a 4th-order Butterworth high-pass at 300 Hz; 16-bit
WAV) into --work (never into the repository; actors 07-12 are not read), and measures, leave one
actor out, the voice expert fit on the training actors' clean clips (E0, the committed recipe) against
the same fit on their clean and telephone clips (E1), each added (w = 0.25, C = 0.1) to what the
checkpoint's networks answer through the service's path on the held-out actor's clips: UA on its
telephone clips and on its clean ones, audio alone and beside the spoken sentence. The IEMOCAP guard
of `scripts/voice_expert_probe.py` (a prosody-8 stand-in fit on the same clips, added to IEMOCAP
validation answers) is printed beside E1. The model card's "A voice expert" section holds the rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import butter, sosfilt
from voice_expert_probe import (  # beside it in scripts/
    IemocapGuard,
    answers,
    standin_clips,
    unweighted_accuracy,
)

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.cli_voice import voice_dialogues
from model.encoders.audio import decode_audio, resample
from model.encoders.egemaps import EGeMAPSEncoder
from model.ravdess import VALID_ACTORS, parse_name
from model.voice import fit_voice_expert

C, WEIGHT = 0.1, 0.25


def telephone_copies(source: Path, out: Path) -> Path:
    """RAVDESS 01-06 clips as a telephone line carries them, as 8 kHz WAVs with the same names."""
    out.mkdir(parents=True, exist_ok=True)
    high_pass = butter(4, 300, btype="highpass", fs=8000, output="sos")
    for clip in sorted(source.glob("03-01-*.flac")):
        if int(parse_name(clip)["actor"]) not in VALID_ACTORS:
            continue
        target = out / f"{clip.stem}.wav"
        if target.is_file():
            continue
        decoded = decode_audio(clip.read_bytes(), max_seconds=60, max_bytes=50_000_000)
        narrow = sosfilt(high_pass, resample(decoded.waveform, decoded.sample_rate, 8000))
        sf.write(target, np.clip(narrow, -1, 1).astype(np.float32), 8000, subtype="PCM_16")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpgnet-telephone"))
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    ckpt.voice = None  # the networks alone
    clean_dir = args.shared / "data/speech/ravdess-01-12"
    phone_dir = telephone_copies(clean_dir, args.work / "ravdess-01-06-telephone")
    cfg, causal = ckpt.config, ckpt.context == "causal"
    fit = dict(c=C, weight=1.0, prior=cfg.audio_prior, mean_prior=cfg.audio_mean_prior, causal=causal)
    spec = EGeMAPSEncoder().spec

    folders = {"clean": clean_dir, "phone": phone_dir}
    clips = {line: voice_dialogues(ckpt, folder, "valid") for line, folder in folders.items()}
    network = {
        (line, m): answers(ckpt, folders[line], "valid", m)[0] for line in folders for m in ("audio", "both")
    }
    guard = IemocapGuard(ckpt, args.shared / "data/iemocap/utterances.jsonl")
    actors = [d.dialogue_id for d in clips["clean"]]
    for line in clips:
        labels = torch.cat([d.labels for d in clips[line]]).numpy()
        ids = [u for d in clips[line] for u in d.utterance_ids]
        cells = []
        for m in ("audio", "both"):
            alone = torch.stack([network[(line, m)][u] for u in ids]).argmax(1).numpy()
            cells.append(f"{m} {unweighted_accuracy(labels, alone):.2f}")
        print(f"the networks alone on {line} clips: " + ", ".join(cells))

    for name, train_lines in (("E0 (clean)", ("clean",)), ("E1 (clean + telephone)", ("clean", "phone"))):
        heard: dict[str, dict[str, torch.Tensor]] = {"clean": {}, "phone": {}}
        for held_out in actors:
            rest = [
                (d.features, d.labels)
                for line in train_lines
                for d in clips[line]
                if d.dialogue_id != held_out
            ]
            expert = fit_voice_expert(rest, spec, ckpt.labels, **fit)
            for line in clips:
                d = next(d for d in clips[line] if d.dialogue_id == held_out)
                m = torch.ones(1, len(d.labels), dtype=torch.bool)
                heard[line].update(
                    zip(d.utterance_ids, expert.log_probs(d.features[None], m, causal=causal)[0], strict=True)
                )
        cells = []
        for line in clips:
            labels = torch.cat([d.labels for d in clips[line]]).numpy()
            ids = [u for d in clips[line] for u in d.utterance_ids]
            expert_logp = torch.stack([heard[line][u] for u in ids])
            for m in ("audio", "both"):
                joined = torch.stack([network[(line, m)][u] for u in ids]) + WEIGHT * expert_logp
                cells.append(f"{line} {m} {unweighted_accuracy(labels, joined.argmax(1).numpy()):.2f}")
        standin = [clip for line in train_lines for clip in standin_clips(ckpt, folders[line])]
        cells.append(f"IEMOCAP guard {guard.change(standin, C, WEIGHT):+.2f}")
        print(f"{name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
