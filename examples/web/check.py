#!/usr/bin/env python3
"""Opens the web page (built by build.sh) in headless Chromium through chromedriver,
waits until it has trained XOR and the MNIST model asked for (the MLP or the CNN),
prints what the page shows and each MNIST epoch's time, saves a screenshot and fails
unless XOR is solved and the MNIST test accuracy reaches the threshold. Standard
library only: serves the crate root with http.server and speaks WebDriver over HTTP.

    examples/web/check.py [--model mlp|cnn] [--device cpu] [--epochs N] [--limit N]
        [--batch N] [--min-accuracy 0.9] [--screenshot FILE] [--no-webgpu]

By default the MLP trains 10 epochs in batches of 32 on the 4000 training images, the
CNN 5 epochs in batches of 64 (the native examples' defaults); --limit trains on the
first N images only.
"""
import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["value"]


def wait_for_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"], help="the MNIST model")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--epochs", type=int, help="MNIST epochs (default: 10 for the MLP, 5 for the CNN)")
    parser.add_argument("--limit", type=int, default=4000, help="MNIST training images (of 4000)")
    parser.add_argument("--batch", type=int, help="MNIST batch size (default: 32 for the MLP, 64 for the CNN)")
    parser.add_argument("--min-accuracy", type=float, default=0.9)
    parser.add_argument("--max-int8-drop", type=float,
                        help="fail unless the model's int8 form (quantized in the page) is at most this far below f32")
    parser.add_argument("--screenshot", help="default: target/web.png (MLP), target/web-cnn.png (CNN)")
    parser.add_argument("--no-webgpu", action="store_true", help="leave out --enable-unsafe-webgpu")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = {"mlp": 10, "cnn": 5}[args.model]
    if args.batch is None:
        args.batch = {"mlp": 32, "cnn": 64}[args.model]
    if args.screenshot is None:
        name = "web.png" if args.model == "mlp" else f"web-{args.model}.png"
        args.screenshot = os.path.join(ROOT, "target", name)

    http_port, driver_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = subprocess.Popen([os.environ.get("CHROMEDRIVER", "chromedriver"), f"--port={driver_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(http_port)
        wait_for_port(driver_port)
        base = f"http://127.0.0.1:{driver_port}"
        chrome_args = ["--headless=new", "--no-sandbox", "--window-size=1200,560"]
        if not args.no_webgpu:
            chrome_args.append("--enable-unsafe-webgpu")
        session = call(base, "POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"args": chrome_args}}}})["sessionId"]
        s = f"/session/{session}"
        call(base, "POST", s + "/window/rect", {"width": 1200, "height": 760})
        query = f"?model={args.model}&device={args.device}&epochs={args.epochs}&limit={args.limit}&batch={args.batch}"
        started = time.time()
        call(base, "POST", s + "/url", {"url": f"http://127.0.0.1:{http_port}/examples/web/{query}"})
        title = ""
        while time.time() - started < args.timeout:
            title = call(base, "GET", s + "/title")
            if title.startswith(("wgnn: done", "wgnn: error")):
                break
            time.sleep(1)
        seconds = time.time() - started
        shown = call(base, "POST", s + "/execute/sync", {"script": (
            "return ['device', 'xor-status', 'mnist-title', 'mnist-status']"
            ".map(id => id + ': ' + document.getElementById(id).textContent)"), "args": []})
        epoch_ms = call(base, "POST", s + "/execute/sync", {"script": "return window.wgnnEpochMs || []", "args": []})
        os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(call(base, "GET", s + "/screenshot")))
        call(base, "DELETE", s)
    finally:
        driver.terminate()
        server.terminate()
    print("\n".join(shown))
    print("MNIST epochs (s, with the test pass):", " ".join(f"{ms / 1000:.1f}" for ms in epoch_ms))
    print(f"title: {title}\n({seconds:.0f} s; screenshot {args.screenshot})")
    if not title.startswith("wgnn: done"):
        sys.exit("the page did not finish training")
    words = title.split()
    xor_accuracy = float(words[words.index("accuracy") + 1].rstrip(";"))
    model = words[words.index("mnist") + 1]
    mnist_accuracy = float(words[-1])
    if model != args.model:
        sys.exit(f"the page trained the {model}, not the {args.model}")
    if xor_accuracy != 1.0 or mnist_accuracy < args.min_accuracy:
        sys.exit(f"XOR accuracy {xor_accuracy} (needs 1), MNIST {model} test accuracy {mnist_accuracy} "
                 f"(needs {args.min_accuracy})")
    if args.max_int8_drop is not None:
        if "int8" not in words:
            sys.exit("the page reported no int8 accuracy")
        int8_accuracy = float(words[words.index("int8") + 1].rstrip(";"))
        print(f"int8 test accuracy {int8_accuracy} against f32 {mnist_accuracy}")
        if int8_accuracy < mnist_accuracy - args.max_int8_drop:
            sys.exit(f"int8 test accuracy {int8_accuracy} is more than {args.max_int8_drop} below f32's {mnist_accuracy}")


if __name__ == "__main__":
    main()
