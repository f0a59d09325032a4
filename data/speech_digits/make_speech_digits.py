#!/usr/bin/env python3
"""Regenerates data/speech_digits/features.safetensors.gz: the spoken digits "zero" to "nine"
synthesized with eSpeak NG, then turned into noisy log-mel spectrograms by wgnn.

Step 1 (this script, Python standard library only): for every digit word, every
eSpeak NG accent and every voice variant below, REPEATS renditions at a speed and a
pitch drawn with a fixed seed, each written by `espeak-ng -w` as a 22,050 Hz mono
16-bit WAV under WAVDIR, with WAVDIR/manifest.csv listing them.

Step 2 (Rust): `cargo run --release --example speech_digits -- --make-features WAVDIR`
reads the manifest and the WAVs, adds seeded white noise, computes log-mel
spectrograms with `wgnn::data::audio` and writes the committed features file. This
script runs it unless --wav-only is given.

    apt-get install espeak-ng
    python3 data/speech_digits/make_speech_digits.py [--wav-dir DIR] [--wav-only]

Nothing here is downloaded; eSpeak NG's output for the same text, voice, speed and
pitch is the same on every run of the same eSpeak NG version (1.51 made the committed file).
"""

import argparse
import csv
import hashlib
import os
import random
import subprocess
import sys

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# eSpeak NG's English accents (languages; `espeak-ng --voices=en`), without the
# MBROLA voices, which need extra packages.
ACCENTS = [
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]

# Voice variants (espeak-ng-data/voices/!v): pitch range, formant shifts, roughness,
# breath; the klatt ones use eSpeak's Klatt synthesizer instead of its default one.
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "croak",
]

REPEATS = 2
SPEED = (120, 220)  # words per minute (eSpeak's default is 175)
PITCH = (25, 75)  # eSpeak's -p, 0-99 (default 50), on top of the variant's own range
SEED = 2024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wav-dir", default="/tmp/speech_digits_wav")
    parser.add_argument("--wav-only", action="store_true", help="stop after writing the WAVs")
    args = parser.parse_args()
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    print(version)
    os.makedirs(args.wav_dir, exist_ok=True)
    rng = random.Random(SEED)
    rows = []
    for accent in ACCENTS:
        for variant in VARIANTS:
            for digit, word in enumerate(WORDS):
                for rep in range(REPEATS):
                    speed = rng.randint(*SPEED)
                    pitch = rng.randint(*PITCH)
                    name = f"{accent}+{variant}_{digit}_{rep}.wav"
                    subprocess.run(
                        ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch),
                         "-w", os.path.join(args.wav_dir, name), word],
                        check=True,
                    )
                    rows.append([name, digit, accent, variant, speed, pitch])
    with open(os.path.join(args.wav_dir, "manifest.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "digit", "accent", "variant", "speed", "pitch"])
        w.writerows(rows)
    print(f"{len(rows)} WAVs and manifest.csv in {args.wav_dir}")
    if args.wav_only:
        return
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = ["cargo", "run", "--release", "--example", "speech_digits", "--", "--make-features", args.wav_dir]
    print(" ".join(cmd))
    if subprocess.run(cmd, cwd=root).returncode != 0:
        sys.exit(1)
    features = os.path.join(root, "data", "speech_digits", "features.safetensors.gz")
    with open(features, "rb") as f:
        print("SHA-256", hashlib.sha256(f.read()).hexdigest(), features)


if __name__ == "__main__":
    main()
