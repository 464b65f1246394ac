"""The Redis KV tier's data path against its peers, in one run on one server: pipelined block
stores and loads over loopback by llmds's RedisBlockStore (C++, hiredis), by redis-py pipelines
(the Python connector a cache layer would use), and by ``redis-benchmark`` (the server's own
client, its limit on this machine).

Run by ``python -m llmds bench --sections remote``. The server is ``LLMDS_REDIS_URL``
(``redis://:password@host:port/db``) if set, else a private ``redis-server`` started on a free
loopback port with a password (``local_redis_server``), which the tests use too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

PASSWORD = "llmds-local-password"


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server listens, and its password."""

    host: str
    port: int
    password: str | None
    database: int = 0


def address_from_url(url: str) -> RedisAddress:
    """``redis://[:password@]host[:port][/db]`` as a RedisAddress; ValueError for another scheme."""
    parts = urlparse(url)
    if parts.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    database = int(parts.path.lstrip("/") or 0)
    return RedisAddress(parts.hostname or "127.0.0.1", parts.port or 6379, parts.password, database)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedisServer:
    """A redis-server child process on a free loopback port, with a password and no persistence,
    that a test can stop, start again (same port, empty) and freeze (SIGSTOP) to inject failures."""

    def __init__(self, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = _free_port()
        self.address = RedisAddress("127.0.0.1", self.port, PASSWORD)
        self._extra = list(extra)
        self._dir = tempfile.TemporaryDirectory(prefix="llmds-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRedisServer:
        """Starts the server (again, empty, on the same port) and waits until it answers."""
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning", *self._extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                if b"PONG" in s.recv(64):
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kills the server (SIGKILL: no shutdown, as a crash)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def freeze(self) -> None:
        """Stops the server's process (SIGSTOP): it keeps its connections and answers nothing."""
        assert self._process is not None
        self._process.send_signal(19)  # SIGSTOP

    def resume(self) -> None:
        """Lets a frozen server go on (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(18)  # SIGCONT

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self.stop()
        self._dir.cleanup()


@contextlib.contextmanager
def local_redis_server(*extra: str) -> Iterator[LocalRedisServer]:
    """A started LocalRedisServer, stopped and removed on exit."""
    server = LocalRedisServer(*extra)
    try:
        yield server.start()
    finally:
        server.close()


@contextlib.contextmanager
def redis_for_bench() -> Iterator[RedisAddress]:
    """LLMDS_REDIS_URL's server if set, else a private one for the run."""
    url = os.environ.get("LLMDS_REDIS_URL")
    if url:
        yield address_from_url(url)
        return
    with local_redis_server("--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru") as server:
        yield server.address


@dataclass(frozen=True)
class Throughput:
    """GB/s (10^9 bytes of block payload per second) of stores and of loads."""

    who: str
    store_gbps: float
    load_gbps: float


def _best(seconds: list[float], payload: int) -> float:
    return payload / min(seconds) / 1e9


def measure_llmds(address: RedisAddress, block_bytes: int, blocks: int, batch: int, repeats: int) -> Throughput:
    """llmds's RedisBlockStore: put and get of `blocks` blocks, `batch` per pipelined call."""
    from llmds.kv_block_manager import RedisBlockStore

    store = RedisBlockStore(block_bytes, address.host, address.port, password=address.password,
                            database=address.database, namespace="llmds-bench", model="llmds")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(batch, block_bytes), dtype=np.uint8)
    hashes = [i.to_bytes(32, "big") for i in range(blocks)]
    stores, loads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, blocks, batch):
            if not all(store.put(hashes[i:i + batch], data)):
                raise RuntimeError(f"llmds: stores failed ({store.stats()})")
        stores.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, blocks, batch):
            _, ok = store.get(hashes[i:i + batch])
            if not all(ok):
                raise RuntimeError(f"llmds: loads failed ({store.stats()})")
        loads.append(time.perf_counter() - start)
    store.remove(hashes)
    payload = blocks * block_bytes
    return Throughput("llmds RedisBlockStore (C++, hiredis)", _best(stores, payload), _best(loads, payload))


def measure_redis_py(address: RedisAddress, block_bytes: int, blocks: int, batch: int, repeats: int) -> Throughput:
    """redis-py pipelines (no transaction) of SET and GET of the same blocks."""
    import redis

    client = redis.Redis(host=address.host, port=address.port, password=address.password, db=address.database)
    rng = np.random.default_rng(0)
    values = [rng.integers(0, 256, size=block_bytes, dtype=np.uint8).tobytes() for _ in range(batch)]
    keys = [f"redis-py-bench:{i:064x}" for i in range(blocks)]
    stores, loads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, blocks, batch):
            pipe = client.pipeline(transaction=False)
            for j, key in enumerate(keys[i:i + batch]):
                pipe.set(key, values[j])
            pipe.execute()
        stores.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, blocks, batch):
            pipe = client.pipeline(transaction=False)
            for key in keys[i:i + batch]:
                pipe.get(key)
            if any(v is None for v in pipe.execute()):
                raise RuntimeError("redis-py: a block was not found")
        loads.append(time.perf_counter() - start)
    client.delete(*keys)
    client.close()
    payload = blocks * block_bytes
    return Throughput(f"redis-py {redis.__version__} pipelines", _best(stores, payload), _best(loads, payload))


def measure_redis_benchmark(address: RedisAddress, block_bytes: int, blocks: int, batch: int) -> Throughput | None:
    """``redis-benchmark -t set,get -d block_bytes -P batch -c 1``; None if it is not installed."""
    if shutil.which("redis-benchmark") is None:
        return None
    command = ["redis-benchmark", "-h", address.host, "-p", str(address.port), "-t", "set,get", "-d", str(block_bytes),
               "-n", str(blocks), "-P", str(batch), "-c", "1", "--csv"]
    if address.password:
        command += ["-a", address.password]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    rps = {row[0]: float(row[1]) for row in csv.reader(io.StringIO(out)) if row and row[0] in ("SET", "GET")}
    return Throughput(f"redis-benchmark (-c 1 -P {batch})", rps["SET"] * block_bytes / 1e9, rps["GET"] * block_bytes / 1e9)


def compare(block_bytes: int = 512 * 1024, blocks: int = 256, batch: int = 16, repeats: int = 3) -> list[Throughput]:
    """Every measurement on one server (LLMDS_REDIS_URL's, or a private one)."""
    with redis_for_bench() as address:
        rows = [measure_llmds(address, block_bytes, blocks, batch, repeats),
                measure_redis_py(address, block_bytes, blocks, batch, repeats)]
        limit = measure_redis_benchmark(address, block_bytes, blocks, batch)
        if limit is not None:
            rows.append(limit)
    return rows


__all__ = ["LocalRedisServer", "RedisAddress", "Throughput", "address_from_url", "compare", "local_redis_server",
           "measure_llmds", "measure_redis_benchmark", "measure_redis_py", "redis_for_bench"]
