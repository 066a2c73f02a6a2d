"""CPU core-seconds per component of a benchmark run, read from ``/proc``.

The run's own processes are the benchmark driver and its descendants (nothing
else on a shared machine is counted). Each process is attributed to a
component: ``nats`` (the ``nats-server`` binary), one of the ``courier up``
children by its command line (``gateway``, ``writer``, ``closer``, ``auditor``,
``dashboard``), ``supervisor`` (``courier up`` itself), and everything else
inherits its parent's component; the driver itself and its other children
(load generator processes) are ``loadgen``.

A process's CPU is ``utime + stime + cutime + cstime`` from ``/proc/<pid>/stat``:
its own time plus that of the children it has reaped. A component's CPU at an
instant is the sum over its live processes, so a child (a gateway worker) that
exits and is reaped between two snapshots moves from its own entry into its
parent's ``cutime`` with nothing lost and nothing counted twice. Zombies keep
their times until reaped. Only a process whose parent dies first (reparented
to init) escapes the count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Components of a ``courier up`` stack, as named on their children's command lines.
STACK_COMPONENTS = ("gateway", "writer", "closer", "auditor", "dashboard")
LOADGEN = "loadgen"
SUPERVISOR = "supervisor"
NATS = "nats"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the CPU accounting needs, in clock ticks."""

    pid: int
    ppid: int
    #: utime + stime: the process's own CPU.
    own_ticks: int
    #: cutime + cstime: CPU of the children it has waited for.
    children_ticks: int

    @property
    def total_ticks(self) -> int:
        return self.own_ticks + self.children_ticks


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may itself hold spaces or
    parentheses, so the numeric fields are split after the LAST ``)``.
    """
    pid_text, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): field N is fields[N - 3].
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(int(pid_text), int(fields[1]), utime + stime, cutime + cstime)


def component_of_cmdline(argv: list[str]) -> str | None:
    """The component a command line starts, or None when it names none."""
    if not argv:
        return None
    if "nats-server" in os.path.basename(argv[0]):
        return NATS
    if "courier.cli.main" in argv or any(os.path.basename(a) == "courier" for a in argv[:2]):
        for name in STACK_COMPONENTS:
            if name in argv[-3:]:
                return name
        if "up" in argv:
            return SUPERVISOR
    return None


def attribute(
    stats: dict[int, ProcStat], cmdlines: dict[int, list[str]], root_pid: int
) -> dict[int, str]:
    """Component of every descendant of ``root_pid`` (and of the root itself)."""
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    out: dict[int, str] = {}
    todo = [(root_pid, LOADGEN)]
    while todo:
        pid, inherited = todo.pop()
        if pid not in stats:
            continue
        out[pid] = component_of_cmdline(cmdlines.get(pid, [])) or inherited
        todo.extend((c, out[pid]) for c in children.get(pid, ()))
    return out


def _read_proc(proc: Path) -> tuple[dict[int, ProcStat], dict[int, list[str]]]:
    stats: dict[int, ProcStat] = {}
    cmdlines: dict[int, list[str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            s = parse_stat((entry / "stat").read_text())
            raw = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue  # exited while we looked: its parent's cutime has it
        stats[s.pid] = s
        cmdlines[s.pid] = raw.decode(errors="replace").split("\0")[:-1] if raw else []
    return stats, cmdlines


def cpu_snapshot(root_pid: int | None = None, proc: Path = Path("/proc")) -> dict[str, float]:
    """Core-seconds used so far per component by ``root_pid`` (default: this process) and
    its descendants."""
    root = os.getpid() if root_pid is None else root_pid
    stats, cmdlines = _read_proc(proc)
    totals: dict[str, float] = {}
    for pid, component in attribute(stats, cmdlines, root).items():
        totals[component] = totals.get(component, 0.0) + stats[pid].total_ticks / _CLOCK_TICKS
    return totals


def cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Core-seconds per component between two snapshots (never negative)."""
    return {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in after.keys() | before}


def per_million(
    core_secs: dict[str, float], events: int, components: tuple[str, ...]
) -> dict[str, float | None]:
    """``cpu_<component>_core_s_per_m`` for each component, plus ``cpu_total_core_s_per_m``
    over them (the load generator is reported beside it, never inside)."""
    scale = 1e6 / events if events else float("nan")
    out: dict[str, float | None] = {}
    for name in components:
        out[f"cpu_{name}_core_s_per_m"] = round(core_secs.get(name, 0.0) * scale, 3)
    out["cpu_total_core_s_per_m"] = round(sum(core_secs.get(n, 0.0) for n in components) * scale, 3)
    return out
