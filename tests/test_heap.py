"""facestyle.heap: freed large blocks are reused inside ``retained_heap`` and given back after it.

Page faults are the observable: a block that malloc hands back to the kernel on ``free`` has to be
faulted in again, page by page, when the next block of that size is touched.

malloc's state is process-wide and whatever ran before (other tests, torch's own allocations) leaves
free chunks behind that change which request is served from where. So every scenario runs in a fresh
interpreter that imports only ``facestyle.heap`` and calls ``malloc`` directly. (Torch's CPU allocator
uses ``posix_memalign(64)``; on glibc 2.36 its small leading split-offs keep freed neighbours from
merging, so there the heap grows for the first few steps before the reuse sets in, by an amount that
depends on the layout. That is not a property of this module: benchmarks/stylize_speed.py measures
what it does to stylize's speed and peak memory.)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest

from facestyle import heap

# Only the C library decides whether the heap can be kept (not FACESTYLE_RETAIN_HEAP: its own test must
# run whatever the caller exported). CI always runs on glibc; the skip is for macOS/musl machines.
pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="platform: not glibc (no mallopt)")

MIB = 1 << 20
#: One "step": blocks of the sizes a 512 px style-transfer step frees and re-allocates, all above the
#: 32 MiB that glibc's dynamic mmap threshold can reach.
STEP_BLOCKS = (48 * MIB, 64 * MIB, 80 * MIB)
STEP_PAGES = sum(STEP_BLOCKS) // resource.getpagesize()

_PRELUDE = (
    textwrap.dedent(
        """
    import ctypes, json, re, resource
    from facestyle import heap

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def alloc(n):
        p = ctypes.c_void_p(libc.malloc(n))
        assert p.value
        libc.memset(p, 1, n)  # touch every page, as a tensor fill does
        return p

    def faults_per_step(steps):
        out = []
        for _ in range(steps):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for p in [alloc(n) for n in BLOCKS]:
                libc.free(p)
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out

    def rss_mib():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024
    """
    )
    + f"BLOCKS = {STEP_BLOCKS!r}\n"
)


def run_scenario(body: str, **env: str) -> dict:
    """Run ``body`` after the prelude in a fresh interpreter; it prints one JSON object."""
    import os

    code = _PRELUDE + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, heap.ENV: "1", **env},  # on unless the scenario says otherwise
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_inside_the_block() -> None:
    """The first step faults its blocks in; every later one reuses them."""
    got = run_scenario(
        """
        with heap.retained_heap() as active:
            inside = faults_per_step(6)
        print(json.dumps({"active": active, "inside": inside}))
        """
    )
    assert got["active"]
    assert got["inside"][0] > STEP_PAGES * 9 // 10, got["inside"]  # the measure sees faults
    assert max(got["inside"][1:]) < STEP_PAGES // 100, f"{got['inside']} ({STEP_PAGES} pages a step)"


def test_after_the_block_large_frees_go_back_to_the_kernel_again() -> None:
    got = run_scenario(
        """
        with heap.retained_heap():
            pass
        print(json.dumps({"after": faults_per_step(3)}))
        """
    )
    assert min(got["after"]) > STEP_PAGES * 9 // 10, f"{got['after']}: thresholds not restored"


def test_the_memory_goes_back_to_the_system_on_exit() -> None:
    got = run_scenario(
        """
        with heap.retained_heap():
            libc.free(alloc(256 << 20))
            retained = rss_mib()
        print(json.dumps({"retained": retained, "released": rss_mib()}))
        """
    )
    assert got["retained"] - got["released"] > 200, got


def test_only_the_outermost_exit_restores() -> None:
    got = run_scenario(
        """
        with heap.retained_heap():
            with heap.retained_heap():
                pass
            still_inside = faults_per_step(6)
        print(json.dumps({"still_inside": still_inside}))
        """
    )
    assert max(got["still_inside"][1:]) < STEP_PAGES // 100, got


def test_the_environment_variable_turns_it_off() -> None:
    got = run_scenario(
        """
        with heap.retained_heap() as active:
            faults = faults_per_step(3)
        print(json.dumps({"enabled": heap.enabled(), "active": active, "faults": faults}))
        """,
        **{heap.ENV: "0"},
    )
    assert not got["enabled"] and not got["active"]
    assert min(got["faults"]) > STEP_PAGES * 9 // 10, got
