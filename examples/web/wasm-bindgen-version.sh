#!/usr/bin/env bash
# Prints the version of wasm-bindgen that Cargo.lock pins: wasm-bindgen-cli must match it.
set -euo pipefail
cd "$(dirname "$0")/../.."
awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
