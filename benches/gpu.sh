#!/usr/bin/env bash
# One command for a machine with a GPU: wgnn's GPU suite beside PyTorch CUDA, and
# the ratio table (issue 10). Two halves:
#
#   benches/gpu.sh prepare   on any x86-64 Linux with the Rust toolchain: builds the
#                            release `bench` example and gathers into target/gpu-bundle/
#                            (git-ignored, ~8 MiB) everything the GPU machine needs:
#                            bin/bench, the Vulkan loader and glvnd packages (debs/),
#                            torch_gpu.py, gpu_report.py and this script.
#                            It also gathers the test suite's binaries (`cargo test
#                            --no-run`, stripped, ~16 MiB as tests.tar.xz).
#   bash target/gpu-bundle/gpu.sh run [--quick]
#                            on the GPU machine (no Rust there), from the repository
#                            root: prints the adapter (refuses a software one), runs
#                            `bench --gpu-suite` and benches/torch_gpu.py, each under a
#                            time limit, then benches/gpu_report.py, then the test suite
#                            on that adapter (as `test` below). Output goes to stdout and
#                            to $OUT (default target/gpu-out): log.txt, wgnn.json,
#                            torch.json, summary.md, tests.md and test-*.txt. The limits
#                            add up to 9.5 minutes; 2-4 expected.
#   bash target/gpu-bundle/gpu.sh test
#                            the test suite alone: every test binary with
#                            WGNN_REQUIRE_GPU=1 on the machine's adapter (the same checks
#                            as `cargo test`: CPU parity, the same bits from every kernel
#                            variant, gradients, training runs), from the repository root
#                            (the tests read data/ and tests/fixtures/ there); tests.md
#                            says what passed and names what failed.
#
# Environment for `run`:
#   WGNN_GPU_SH_ALLOW_SOFTWARE=1  accept a software adapter (llvmpipe) and PyTorch on
#                                 the CPU: to test this script where there is no GPU
#   WGNN_VULKAN_LIB_DIR=DIR       take libvulkan.so.1 from DIR (else the system's, else
#                                 the bundle's packages, unpacked under /tmp)
#   WGNN_GPU_SH_BUNDLED_LOADER=1  use the bundle's loader even when the system has one
#   WGNN_GPU_SH_PYTHON            the Python with PyTorch (default python3)
#   WGPU_BACKEND                  wgpu backends to try (default vulkan)
#   WGNN_GPU_SH_WGNN_TIMEOUT, WGNN_GPU_SH_TORCH_TIMEOUT  seconds (default 240, 150)
#   WGNN_GPU_SH_TESTS_TIMEOUT     seconds for all the test binaries together (default 120)
#   WGNN_GPU_SH_SKIP_TESTS=1      `run` without the test suite
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin # ldconfig, also under a bare `env -i PATH=/usr/bin:/bin`

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -x "$here/bin/bench" ]; then # this copy lives in a bundle
    bundle=$here
    root=$PWD
else
    root=$(cd "$here/.." && pwd)
    bundle=${WGNN_GPU_BUNDLE:-$root/target/gpu-bundle}
fi

prepare() {
    cd "$root"
    local target=${CARGO_TARGET_DIR:-$root/target}
    cargo build --release --example bench
    rm -rf "$bundle"
    mkdir -p "$bundle/bin" "$bundle/debs"
    if command -v strip >/dev/null; then
        strip -o "$bundle/bin/bench" "$target/release/examples/bench"
    else
        cp "$target/release/examples/bench" "$bundle/bin/bench"
    fi
    cp benches/gpu.sh benches/torch_gpu.py benches/gpu_report.py "$bundle/"
    # The Vulkan loader and glvnd (the NVIDIA ICD's libGLX_nvidia needs libGLdispatch),
    # as .deb files: the GPU machine may have neither and cannot download.
    if ! (cd "$bundle/debs" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1); then
        echo "gpu.sh: apt-get download failed; bundling this machine's libvulkan.so.1 instead" >&2
        mkdir -p "$bundle/lib"
        cp -L "$(ldconfig -p | awk '/libvulkan.so.1 .*x86-64/ {print $NF; exit}')" "$bundle/lib/libvulkan.so.1"
    fi
    bundle_tests
    git -C "$root" rev-parse HEAD >"$bundle/COMMIT" 2>/dev/null || true
    echo "bundle: $bundle ($(du -sh "$bundle" | cut -f1)), commit $(cat "$bundle/COMMIT" 2>/dev/null)"
    echo "device tool: run(command='bash ${bundle#"$root"/}/gpu.sh run', carry=['${bundle#"$root"/}'], timeout_s=540)"
}

# The test suite's binaries (debug, as `cargo test` builds them), stripped, into
# $bundle/tests.tar.xz, and the checkout's path they were built in (the tests open
# data/ and tests/fixtures/ under it: `test` links it to the checkout it runs in).
bundle_tests() {
    local list staging
    list=$(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        print(("lib" if kind == "lib" else m["target"]["name"]) + " " + m["executable"])
')
    [ -n "$list" ] || { echo "gpu.sh: cargo test --no-run gave no test binaries" >&2; exit 1; }
    staging=$(mktemp -d)
    while read -r name exe; do
        if command -v strip >/dev/null; then strip -o "$staging/$name" "$exe"; else cp "$exe" "$staging/$name"; fi
    done <<<"$list"
    tar -C "$staging" -cJf "$bundle/tests.tar.xz" .
    rm -rf "$staging"
    echo "$root" >"$bundle/MANIFEST_DIR"
    echo "tests: $(wc -l <<<"$list") binaries, $(du -h "$bundle/tests.tar.xz" | cut -f1) packed"
}

# Makes libvulkan.so.1 and an NVIDIA ICD visible to wgpu, or says what is missing.
vulkan_setup() {
    if [ -n "${WGNN_VULKAN_LIB_DIR:-}" ]; then
        export LD_LIBRARY_PATH=$WGNN_VULKAN_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "vulkan loader: from WGNN_VULKAN_LIB_DIR=$WGNN_VULKAN_LIB_DIR"
    elif ldconfig -p | grep 'libvulkan.so.1 ' >/dev/null && [ -z "${WGNN_GPU_SH_BUNDLED_LOADER:-}" ]; then
        echo "vulkan loader: the system's ($(ldconfig -p | awk '/libvulkan.so.1 / {print $NF; exit}'))"
    elif compgen -G "$bundle/debs/*.deb" >/dev/null; then
        local gl
        [ -n "${WGNN_GPU_SH_BUNDLED_LOADER:-}" ] || system_lacks_loader=1
        gl=$(mktemp -d /tmp/wgnn-gl.XXXXXX)
        for f in "$bundle"/debs/*.deb; do dpkg -x "$f" "$gl"; done
        export LD_LIBRARY_PATH=$gl/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "vulkan loader: the bundle's packages, unpacked in $gl"
    elif [ -e "$bundle/lib/libvulkan.so.1" ]; then
        export LD_LIBRARY_PATH=$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "vulkan loader: $bundle/lib/libvulkan.so.1"
    else
        echo "vulkan loader: none found (no system libvulkan.so.1, nothing in the bundle)"
    fi
    if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] &&
        ! compgen -G "/usr/share/vulkan/icd.d/nvidia*" >/dev/null &&
        ! compgen -G "/etc/vulkan/icd.d/nvidia*" >/dev/null; then
        local icd
        for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
            if [ -e "$icd" ]; then
                export VK_DRIVER_FILES=$icd
                echo "vulkan driver: VK_DRIVER_FILES=$icd"
                break
            fi
        done
    fi
}

# Prints the host and the GPU, makes Vulkan visible and checks that wgpu finds a
# usable adapter (a software one only under WGNN_GPU_SH_ALLOW_SOFTWARE); exits 1 if not.
adapter_check() {
    echo "host: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true
    else
        echo "nvidia-smi: not found"
    fi
    vulkan_setup
    echo "== adapter (WGPU_BACKEND=$WGPU_BACKEND)"
    local adapter=(timeout 60 "$bundle/bin/bench" --gpu-suite --adapter-only $allow)
    if ! "${adapter[@]}"; then
        local ok=""
        if [ -n "${system_lacks_loader:-}" ] && [ "$(id -u)" = 0 ]; then
            # The device tool's README recipe, proven there: the packages unpacked
            # over / (that machine is discarded after the session), then again.
            echo "gpu.sh: retrying with the bundle's packages unpacked over / (dpkg -x; ldconfig)"
            for f in "$bundle"/debs/*.deb; do dpkg -x "$f" /; done
            ldconfig
            "${adapter[@]}" && ok=1
        fi
        if [ -z "$ok" ]; then
            echo "gpu.sh: FAILED: wgpu found no usable GPU adapter (above: why). Checks:"
            ldconfig -p | grep -i vulkan || echo "  no libvulkan in ldconfig"
            ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>&1 | sed 's/^/  /' || true
            exit 1
        fi
    fi
}

# The test suite on the adapter adapter_check found: each binary of tests.tar.xz under
# WGNN_REQUIRE_GPU=1, all of them within WGNN_GPU_SH_TESTS_TIMEOUT seconds, from the
# checkout ($root); each one's output in $out/test-NAME.txt, the results in
# $out/tests.md.
tests() {
    local dir manifest deadline name left rc result failed incomplete=""
    [ -e "$bundle/tests.tar.xz" ] || { echo "gpu.sh: no tests.tar.xz in the bundle (benches/gpu.sh prepare makes it)"; return 1; }
    dir=$(mktemp -d /tmp/wgnn-tests.XXXXXX)
    tar -C "$dir" -xJf "$bundle/tests.tar.xz"
    # The tests open files under the path they were built in: make it reach this checkout.
    manifest=$(cat "$bundle/MANIFEST_DIR")
    if [ ! -e "$manifest/data" ]; then
        mkdir -p "$(dirname "$manifest")" && ln -sfn "$root" "$manifest" &&
            echo "tests: $manifest -> $root (the path they were built in)" ||
            echo "gpu.sh: cannot link $manifest to $root: tests that read data/ or tests/fixtures/ will fail"
    fi
    deadline=$((SECONDS + ${WGNN_GPU_SH_TESTS_TIMEOUT:-120}))
    {
        echo "# Tests on the adapter, commit $(cat "$bundle/COMMIT" 2>/dev/null || echo '?')"
        echo
        echo "\`WGNN_REQUIRE_GPU=1\`, $(nproc) test threads, each binary of \`cargo test\` (debug, stripped)."
        echo
        echo "| binary | result |"
        echo "| --- | --- |"
    } >"$out/tests.md"
    failed=""
    for name in lib $(ls "$dir" | grep -vx lib || true); do
        [ -x "$dir/$name" ] || continue
        left=$((deadline - SECONDS))
        if [ "$left" -le 0 ]; then
            echo "| $name | not run (out of time) |" >>"$out/tests.md"
            incomplete=1
            continue
        fi
        echo "== tests: $name (at most ${left} s)"
        rc=0
        (cd "$root" && WGNN_REQUIRE_GPU=1 timeout "$left" "$dir/$name" --test-threads="$(nproc)") >"$out/test-$name.txt" 2>&1 || rc=$?
        result=$(grep '^test result:' "$out/test-$name.txt" | tail -1 || true)
        if [ -z "$result" ]; then
            incomplete=1
            if [ $rc = 124 ]; then result="timed out"; else result="no result (status $rc)"; fi
        fi
        echo "$name: $result"
        echo "| $name | ${result#test result: } |" >>"$out/tests.md"
        failed+=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/- `'"$name"'` \1/p' "$out/test-$name.txt")$'\n'
    done
    failed=$(grep -v '^$' <<<"$failed" || true)
    {
        echo
        if [ -n "$failed" ]; then
            echo "Failed (their messages: test-BINARY.txt):"
            echo
            echo "$failed"
        else
            echo "No test failed${incomplete:+ of those that ran}."
        fi
        [ -z "$incomplete" ] || echo "Not every binary finished: raise WGNN_GPU_SH_TESTS_TIMEOUT or rerun with \`gpu.sh test\`."
    } >>"$out/tests.md"
    cat "$out/tests.md"
    rm -rf "$dir"
    [ -z "$failed$incomplete" ]
}

# Sets $out, sends everything printed to $out/LOG as well, and the suites' environment.
start() {
    out=${OUT:-$root/target/gpu-out}
    mkdir -p "$out"
    exec > >(tee "$out/$1") 2>&1
    export PYTHONUNBUFFERED=1 WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
    allow="" allow_cpu=""
    if [ -n "${WGNN_GPU_SH_ALLOW_SOFTWARE:-}" ]; then allow=--allow-software allow_cpu=--allow-cpu; fi
}

run() {
    local quick=""
    for a in "$@"; do
        case $a in
        --quick) quick=--quick ;;
        *) echo "gpu.sh run: unknown argument $a" >&2 && exit 2 ;;
        esac
    done
    start log.txt
    local bench=$bundle/bin/bench python=${WGNN_GPU_SH_PYTHON:-python3}
    echo "== gpu.sh run $quick ($(date -u +%FT%TZ)), bundle $bundle, commit $(cat "$bundle/COMMIT" 2>/dev/null || echo '?'), out $out"
    adapter_check
    echo "== wgnn suite"
    local rc=0
    timeout "${WGNN_GPU_SH_WGNN_TIMEOUT:-240}" "$bench" --gpu-suite --out "$out" $quick $allow || rc=$?
    [ $rc = 0 ] || echo "gpu.sh: wgnn suite ended with status $rc (124: timed out); what it measured is in wgnn.json"
    echo "== PyTorch suite"
    rc=0
    timeout "${WGNN_GPU_SH_TORCH_TIMEOUT:-150}" "$python" "$bundle/torch_gpu.py" --out "$out" $quick $allow_cpu || rc=$?
    [ $rc = 0 ] || echo "gpu.sh: torch suite ended with status $rc (124: timed out)"
    echo "== summary ($out/summary.md)"
    "$python" "$bundle/gpu_report.py" "$out"
    if [ -z "${WGNN_GPU_SH_SKIP_TESTS:-}" ]; then
        echo "== tests ($out/tests.md)"
        tests || echo "gpu.sh: some tests failed or did not run (tests.md)"
    fi
}

test_only() {
    start tests-log.txt
    echo "== gpu.sh test ($(date -u +%FT%TZ)), bundle $bundle, commit $(cat "$bundle/COMMIT" 2>/dev/null || echo '?'), out $out"
    adapter_check
    tests
}

case ${1:-} in
prepare) prepare ;;
run) shift && run "$@" ;;
test) test_only ;;
*)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
esac
