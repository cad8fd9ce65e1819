"""Every address an agent CLI tries to reach, recorded by strace, for the check that the agents
connect nowhere but loopback during the tests.

`NetTrace(folder).wrap(executable)` makes a folder holding a script of the executable's name that
runs the real one under `strace -f` (its children and threads too), tracing the system calls that
name a peer (connect, sendto, sendmsg, sendmmsg) into one log per start. Put that folder first on
PATH and the preset's command line runs under the trace unchanged. `remote()` lists what was
tried beyond loopback: a DNS query to the resolver, a telemetry or update host, a fallback to an
agent's own API. A connection refused or dropped is still a connect call, so an attempt counts
even where the network is closed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CALLS = "connect,sendto,sendmsg,sendmmsg"
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')


@functools.cache
def usable() -> str:
    """"" when strace can trace here, else why not (not installed, ptrace not permitted)."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed (scripts/test.sh installs it with apt-get)"
    try:
        done = subprocess.run([strace, "-f", "-qq", "-e", f"trace={CALLS}", "-o", "/dev/null", "true"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"strace does not run: {e}"
    return "" if done.returncode == 0 else f"strace cannot trace here: {done.stderr.strip()[-200:]}"


def is_local(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback or ip.is_unspecified


@dataclass
class NetTrace:
    folder: Path

    def wrap(self, executable: Path) -> Path:
        """The folder of a script named like `executable` that runs it under strace."""
        bin_dir, logs = self.folder / "bin", self.folder / "logs"
        bin_dir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(exist_ok=True)
        script = bin_dir / executable.name
        strace = shlex.quote(shutil.which("strace") or "strace")
        script.write_text(
            "#!/bin/sh\n"
            f'exec {strace} -f -qq --seccomp-bpf -e trace={CALLS} -e signal=none -o "{logs}/trace.$$" '
            f'{shlex.quote(str(executable.resolve()))} "$@"\n')
        script.chmod(0o755)
        return bin_dir

    def lines(self) -> list[str]:
        return [line for log in sorted((self.folder / "logs").glob("trace.*"))
                for line in log.read_text(errors="replace").splitlines()]

    def tried(self, port: int) -> bool:
        """Whether some call named loopback's `port` (the model server's)."""
        return any(f"htons({port})" in line for line in self.lines())

    def addresses(self) -> list[str]:
        return [a or b for line in self.lines() for a, b in ADDRESS.findall(line)]

    def remote(self) -> list[str]:
        """The calls that named an address beyond loopback."""
        return [line for line in self.lines() if any(not is_local(a or b) for a, b in ADDRESS.findall(line))]
