"""A private containerd for a test: its config, sockets, root and state under one temp dir
the test made (unix socket paths must stay short: use tempfile.mkdtemp, not tmp_path), and
stopped by its pid."""

import os
import signal
import subprocess
import time


class Containerd:
    def __init__(self, d: str, config: str, env: dict | None = None):
        """Write config (TOML whose grpc address is d/c.sock) and start containerd on it."""
        self.d = d
        self.sock = os.path.join(d, "c.sock")
        cfg = os.path.join(d, "config.toml")
        with open(cfg, "w") as f:
            f.write(config)
        self.log_path = os.path.join(d, "containerd.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=self._log,
                                     stderr=self._log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock) and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if not os.path.exists(self.sock):
            self.stop()
            with open(self.log_path) as f:
                raise AssertionError(f"containerd did not start: {f.read()[-2000:]}")

    def ctr(self, *args, check=True, timeout=60) -> subprocess.CompletedProcess:
        p = subprocess.run(["ctr", "--address", self.sock, *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {p.returncode}: {p.stderr}")
        return p

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
