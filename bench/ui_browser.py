#!/usr/bin/env python3
"""Times the page of `depsetfs ui` in headless chromium (over W3C WebDriver, chromedriver):
opening (until the set's file count and the first level of the file tree are shown), and
tweaks (until the page shows the answer: the new generation and the file tree reloaded).
Standard library only. Usage:

    bench/ui_browser.py URL [--exclude GLOB] [--strategy NAME] [--screenshot FILE.png]

Prints one `name seconds` line per measurement."""

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, profile):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            ["timeout", "-k", "5", "600", "chromedriver", f"--port={port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if self.call("GET", "/status")["value"]["ready"]:
                    break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,1300", f"--user-data-dir={profile}"]}}}}
        self.sid = self.call("POST", "/session", caps)["value"]["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)["value"]

    def js(self, script):
        return self.s("POST", "/execute/sync", {"script": script, "args": []})

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.sid}")
        finally:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()


def wait(driver, script, timeout=60):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if driver.js(script):
            return time.monotonic() - start
        time.sleep(0.02)
    raise SystemExit(f"not within {timeout} s: {script}")


def shown(gen):
    """The page shows a tweak's answer: its summary (a new generation) and the file tree
    reloaded for it (`data-shown`; a page without it: the summary alone)."""
    return (f"const b = document.body.dataset; return b.generation !== {json.dumps(gen)}"
            " && (b.shown === undefined || b.shown === b.generation)")


def files(driver):
    return driver.js("return document.getElementById('set-files').textContent")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--exclude")
    ap.add_argument("--strategy")
    ap.add_argument("--screenshot")
    ap.add_argument("--expand", action="append", default=[],
                    help="a directory to open in the file tree before the screenshot")
    ap.add_argument("--why", help="a path whose why answer the screenshot shows")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as profile:
        d = Driver(profile)
        try:
            start = time.monotonic()
            d.s("POST", "/url", {"url": args.url})
            wait(d, "return /^[0-9]+$/.test(document.getElementById('set-files').textContent)"
                    " && document.querySelectorAll('#files .file-row').length > 0")
            print(f"open-until-usable {time.monotonic() - start:.2f}")
            wait(d, "return !!document.getElementById('report-table')", 120)
            print(f"open-until-strategies-table {time.monotonic() - start:.2f}")
            if args.exclude:
                before = files(d)
                gen = d.js("return document.body.dataset.generation")
                d.js(f"document.getElementById('glob').value = {json.dumps(args.exclude)};"
                     "document.getElementById('glob-exclude').click();")
                t = wait(d, shown(gen))
                print(f"tweak-exclude {t:.2f}  ({before} -> {files(d)} files)")
            if args.strategy:
                before = files(d)
                gen = d.js("return document.body.dataset.generation")
                d.js(f"const s = document.getElementById('strategy'); s.value = {json.dumps(args.strategy)};"
                     "s.dispatchEvent(new Event('change'));")
                t = wait(d, shown(gen))
                print(f"tweak-strategy {t:.2f}  ({before} -> {files(d)} files)")
            if args.screenshot:
                for path in args.expand:
                    wait(d, f"return !!document.querySelector('.file-row[data-path={json.dumps(path)}] .tog')")
                    d.js(f"document.querySelector('.file-row[data-path={json.dumps(path)}] .tog').click()")
                    time.sleep(0.5)
                if args.why:
                    d.js(f"showWhy({json.dumps(args.why)})")
                time.sleep(1.5)
                png = base64.b64decode(d.s("GET", "/screenshot"))
                with open(args.screenshot, "wb") as f:
                    f.write(png)
        finally:
            d.close()


if __name__ == "__main__":
    sys.exit(main())
