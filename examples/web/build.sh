#!/usr/bin/env bash
# Builds the web page's wasm (release, optimized for size: `--profile web`) and its
# JS bindings into examples/web/pkg/. Needs the wasm32-unknown-unknown target and
# wasm-bindgen-cli at the version of wasm-bindgen in Cargo.lock:
#   rustup target add wasm32-unknown-unknown
#   cargo install wasm-bindgen-cli --version "$(examples/web/wasm-bindgen-version.sh)"
# Then serve the crate's root (the page fetches ../../data/mnist_5k.csv.gz) and open
# http://localhost:8000/examples/web/:
#   python3 -m http.server 8000
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --profile web --example web --target wasm32-unknown-unknown
target="${CARGO_TARGET_DIR:-target}"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir examples/web/pkg \
    "$target/wasm32-unknown-unknown/web/examples/web.wasm"
ls -l examples/web/pkg/web_bg.wasm
