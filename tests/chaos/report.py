"""What a person reads after chaos runs: a markdown summary and one SVG plot per run.

- :func:`summary_markdown`: the issue's "Done when" criteria over all runs, a table per fault
  class, a table per run (operations, faults, anomalies by kind, lost writes, convergence time,
  a link to its plot), then each run's schedule, errors and example anomalies.
- :func:`write_plot`: operations completed per second (ok, fail, info) over the run's time,
  fault intervals as shaded bands (darker while the fault lasts, lighter while it is healed: a
  reboot or a rejoin), the end of the workload and the moment the group was whole and
  converged. Plain SVG written by hand: no plotting library in the dependencies.

Nothing here decides a verdict: it only formats what the checkers found.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .history import Op

if TYPE_CHECKING:
    from .runner import RunResult

# Violations the issue names (checker:kind as RunResult.violations() spells them).
G_KINDS = ("G0", "G1a", "G1b", "G1c", "lost-update")
BUCKET_S = 1.0  # the plot's bar width


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "—"


def _conv(r: RunResult) -> str:
    return f"{r.converged_s:.1f} s" if r.converged_s is not None else "**NO**"


def _sum(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(total)


def summary_markdown(runs: Sequence[RunResult], seed: int, command: str, out: Path) -> str:
    """The summary of ``runs`` (made from ``seed`` with ``command``); plots are linked relative
    to ``out``, where the summary is written."""
    quiet = [r for r in runs if r.klass == "none"]
    faulty = [r for r in runs if r.klass != "none"]
    ops = sum(sum(r.ops.values()) for r in runs)
    violations = _sum(r.violations() for r in runs)
    allowed = _sum(r.allowed() for r in runs)
    stale = [r.stale_reads() for r in runs]
    strict_reads = sum(v["reads"] for s in stale for lvl, v in s["by_level"].items() if lvl != "EVENTUAL")
    eventual_reads = sum(v["reads"] for s in stale for lvl, v in s["by_level"].items() if lvl == "EVENTUAL")
    strict_levels = sorted({lvl for s in stale for lvl in s["by_level"] if lvl != "EVENTUAL"})
    g = {k: violations.get(f"list-append:{k}", 0) for k in G_KINDS}
    bank = sum(n for k, n in violations.items() if k.startswith("bank"))
    known = {*(f"list-append:{k}" for k in G_KINDS), "stale-reads:stale-read"}
    other = {k: n for k, n in violations.items()
             if k not in known and not k.startswith(("bank", "lost-writes", "convergence"))}
    lines = [
        f"# chaos summary — seed {seed}", "",
        f"command: `{command}`", "",
        f"{len(runs)} runs ({len(faulty)} with faults, {len(quiet)} without), {ops} operations, "
        f"{sum(len(r.faults) for r in runs)} faults applied or scheduled.", "",
        "## Done when (issue 11)", "",
        "| criterion | result |", "|---|---|",
        f"| runs with faults / without | {len(faulty)} / {len(quiet)} |",
        f"| lost acknowledged writes | {sum(r.lost_writes() for r in runs)} |",
        f"| resurrected failed writes | {sum(r.resurrected_writes() for r in runs)} |",
        f"| identical backends (all ONLINE, same checksums and positions) | "
        f"{sum(r.identical_backends for r in runs)}/{len(runs)} |",
        f"| bank violations | {bank} |",
        f"| {' / '.join(G_KINDS)} | {' / '.join(str(g[k]) for k in G_KINDS)} |",
        f"| G-single (read skew; fixed by the applier's commit order, see README) | {violations.get('list-append:G-single', 0)} |",
        f"| stale reads the levels forbid: a read at BEFORE / BEFORE_AND_AFTER, or of a write made at "
        f"AFTER / BEFORE_AND_AFTER (must be 0) | {sum(s['strict'] for s in stale)} "
        f"(key reads checked: {strict_reads} at {'/'.join(strict_levels) or '-'}, {eventual_reads} at EVENTUAL) |",
        f"| stale reads no level forbids (EVENTUAL writes read at EVENTUAL / AFTER; allowed, reported: "
        f"proves the check sees lag) | {sum(s['eventual'] for s in stale)} |",
        f"| other violations | {_fmt_counts(other)} |",
        f"| runs with any violation | {sum(not r.valid for r in runs)} |",
        "",
        f"Anomalies by kind over all runs — violations: {_fmt_counts(violations)}; "
        f"allowed (reported): {_fmt_counts(allowed)}.", "",
        "## By fault class", "",
        "| class | runs (single/multi) | ops ok/fail/info | faults | violations by kind | lost writes | "
        "identical backends | stale strict/eventual | slowest convergence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for klass in dict.fromkeys(r.klass for r in runs):
        rs = [r for r in runs if r.klass == klass]
        o = _sum(r.ops for r in rs)
        sp = sum(r.mode == "single-primary" for r in rs)
        conv = [r.converged_s for r in rs if r.converged_s is not None]
        slowest = f"{max(conv):.1f} s" if conv else "—"
        if any(r.converged_s is None for r in rs):
            slowest += f" ({sum(r.converged_s is None for r in rs)} NO)"
        st = [r.stale_reads() for r in rs]
        lines.append(
            f"| {klass} | {len(rs)} ({sp}/{len(rs) - sp}) | {o.get('ok', 0)}/{o.get('fail', 0)}/{o.get('info', 0)} | "
            f"{sum(len(r.faults) for r in rs)} | {_fmt_counts(_sum(r.violations() for r in rs))} | "
            f"{sum(r.lost_writes() for r in rs)} | {sum(r.identical_backends for r in rs)}/{len(rs)} | "
            f"{sum(s['strict'] for s in st)}/{sum(s['eventual'] for s in st)} | {slowest} |")
    lines += [
        "", "## Runs", "",
        "| run | class | mode | s | faults | ops ok/fail/info | violations by kind | allowed (reported) | "
        "stale strict/eventual | lost writes | backends identical | converged in | plot | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        kinds = " ".join(sorted(set(r.fault_kinds))) or "none"
        s = r.stale_reads()
        plot = _rel(Path(r.directory) / "plot.svg", out)
        lines.append(
            f"| {r.seed} | {r.klass} | {r.mode.split('-')[0]} | {r.duration_s:.0f} | {len(r.faults)}: {kinds} | "
            f"{r.ops['ok']}/{r.ops['fail']}/{r.ops['info']} | {_fmt_counts(r.violations())} | "
            f"{_fmt_counts(r.allowed())} | {s['strict']}/{s['eventual']} | {r.lost_writes()} | "
            f"{'yes' if r.identical_backends else '**no**'} | {_conv(r)} | "
            f"{f'[svg]({plot})' if plot else '—'} | {'ok' if r.valid else '**ANOMALIES**'} |")
    lines.append("")
    for r in runs:
        lines += [f"## run {r.seed} — {r.klass}, {r.mode}, {r.duration_s:.0f} s, levels {', '.join(r.levels)}", ""]
        if r.replay:
            lines += [f"replay: `{r.replay}`", ""]
        plot = _rel(Path(r.directory) / "plot.svg", out)
        if plot:
            lines += [f"![operations and faults over time, run {r.seed}]({plot})", ""]
        lines += ["schedule (as applied: seconds since the workload started):", "```"]
        if r.intervals:
            for iv in r.intervals:
                end = f"{iv.end_s:.1f}" if iv.end_s is not None else "?"
                heal = f"{iv.heal_s:.1f}" if iv.heal_s is not None else "?"
                lines.append(f"{iv.start_s:6.1f}s heal {heal}s healed {end}s: {iv.what}")
        else:
            lines += r.faults or ["(no faults)"]
        lines.append("```")
        if r.nemesis_errors:
            lines += ["nemesis errors:", "```", *r.nemesis_errors, "```"]
        if r.nemesis_log:
            lines += ["what the DBA saw:", "```", *r.nemesis_log, "```"]
        for res in r.results:
            if res.kinds():
                lines.append(f"- {res.checker}: {res.counts()}" + ("" if res.valid else " **violation**"))
                for k, v in res.anomalies.items():
                    if v and k not in res.allowed:
                        lines.append(f"  - e.g. {v[0].detail[:400]}")
        by_level = r.stale_reads()["by_level"]
        if by_level:
            lines.append("- key reads by level (checked / stale / stale but allowed): " + "; ".join(
                f"{lvl} {v['reads']}/{v['stale']}/{v['stale_allowed']}" for lvl, v in by_level.items()))
        lines += [f"- files: {r.directory}", ""]
    return "\n".join(lines) + "\n"


def _rel(path: Path, base: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the plot

WIDTH, HEIGHT = 960, 350
LEFT, RIGHT, TOP = 56, 16, 34
PANEL_OK = (TOP, 150)  # y, height of the ok panel
PANEL_BAD = (TOP + 150 + 26, 90)  # the fail / info panel
COLORS = {"ok": "#2e7d32", "fail": "#ef6c00", "info": "#6a1b9a"}
FAULT_COLORS = {
    "isolate": "#e57373", "split": "#e57373", "bridge": "#e57373", "one-way": "#e57373", "reset": "#e57373",
    "delay": "#ffb74d", "stop-member": "#64b5f6", "stop-backend": "#64b5f6", "kill-member": "#9575cd",
    "kill-backend": "#9575cd", "crash-all": "#424242", "force-members": "#8d6e63", "give-up": "#4db6ac",
}


def buckets(ops: Sequence[Op], t0_ns: int, bucket_s: float = BUCKET_S) -> dict[str, list[int]]:
    """Completions per ``bucket_s`` since ``t0_ns``, by type (ok / fail / info)."""
    out: dict[str, list[int]] = {"ok": [], "fail": [], "info": []}
    for op in ops:
        if op.type == "invoke":
            continue
        i = max(0, int((op.time_ns - t0_ns) / 1e9 / bucket_s))
        series = out[op.type]
        while len(series) <= i:
            series.append(0)
        series[i] += 1
    n = max(len(v) for v in out.values())
    for v in out.values():
        v.extend([0] * (n - len(v)))
    return out


def plot_svg(title: str, series: dict[str, list[int]], intervals: Sequence[Any], *, end_s: float,
             marks: Sequence[tuple[float, str]] = (), bucket_s: float = BUCKET_S) -> str:
    """An SVG document: ``series`` (per type, counts per bucket) as step lines, ``intervals``
    (objects with kind, what, start_s, heal_s, end_s) as bands, ``marks`` as labelled vertical
    lines, over 0..``end_s`` seconds."""
    span = max(end_s, len(series["ok"]) * bucket_s, 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + plot_w * min(max(t, 0.0), span) / span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    legend_x = WIDTH - RIGHT - 250
    for i, (k, color) in enumerate(COLORS.items()):
        parts.append(f'<rect x="{legend_x + i * 80}" y="5" width="12" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 16 + i * 80}" y="14">{k}/s</text>')
    # Fault bands over both panels.
    band_top, band_bottom = PANEL_OK[0], PANEL_BAD[0] + PANEL_BAD[1]
    for n, iv in enumerate(intervals):
        color = FAULT_COLORS.get(iv.kind, "#9e9e9e")
        heal = iv.heal_s if iv.heal_s is not None else span
        end = iv.end_s if iv.end_s is not None else heal
        parts.append(f'<rect x="{x(iv.start_s):.1f}" y="{band_top}" width="{max(1.0, x(heal) - x(iv.start_s)):.1f}" '
                     f'height="{band_bottom - band_top}" fill="{color}" fill-opacity="0.28">'
                     f'<title>{html.escape(iv.what)}</title></rect>')
        if end > heal:
            parts.append(f'<rect x="{x(heal):.1f}" y="{band_top}" width="{max(1.0, x(end) - x(heal)):.1f}" '
                         f'height="{band_bottom - band_top}" fill="{color}" fill-opacity="0.12">'
                         f'<title>healing: {html.escape(iv.what)}</title></rect>')
        label_y = TOP - 6 - 10 * (n % 2)
        parts.append(f'<text x="{x(iv.start_s) + 1:.1f}" y="{label_y + 10}" font-size="9" fill="#333">'
                     f'{html.escape(_short(iv))}</text>')
    for (y0, h), keys in ((PANEL_OK, ("ok",)), (PANEL_BAD, ("fail", "info"))):
        top = max([max(series[k], default=0) for k in keys] + [1])
        parts.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{h}" fill="none" stroke="#999"/>')
        for frac in (0.0, 0.5, 1.0):
            yy = y0 + h - h * frac
            parts.append(f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end">{top * frac:.0f}</text>')
            if 0 < frac:
                parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        for k in keys:
            pts = []
            for i, v in enumerate(series[k]):
                yy = y0 + h - h * v / top
                pts.append(f"{x(i * bucket_s):.1f},{yy:.1f} {x((i + 1) * bucket_s):.1f},{yy:.1f}")
            if pts:
                parts.append(f'<polyline fill="none" stroke="{COLORS[k]}" stroke-width="1.4" points="{" ".join(pts)}"/>')
        parts.append(f'<text x="12" y="{y0 + h / 2:.0f}" transform="rotate(-90 12 {y0 + h / 2:.0f})" '
                     f'text-anchor="middle">{"/".join(keys)} per s</text>')
    for n, (t, label) in enumerate(marks):
        right_half = x(t) > LEFT + plot_w / 2
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{band_top}" y2="{band_bottom}" stroke="#000" '
                     f'stroke-dasharray="4 3"/><text x="{x(t) + (-2 if right_half else 2):.1f}" '
                     f'y="{PANEL_OK[0] + 12 + 11 * n}" font-size="9" text-anchor="{"end" if right_half else "start"}">'
                     f'{html.escape(label)}</text>')
    axis_y = band_bottom + 24
    step = _tick_step(span)
    t = 0.0
    while t <= span + 1e-9:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{band_bottom}" y2="{band_bottom + 4}" stroke="#666"/>'
                     f'<text x="{x(t):.1f}" y="{axis_y}" text-anchor="middle">{t:.0f}</text>')
        t += step
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{axis_y + 14}" text-anchor="middle">'
                 f'seconds since the workload started</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _short(iv: Any) -> str:
    return str(getattr(iv, "label", "") or iv.kind)[:40]


def _tick_step(span: float) -> float:
    for step in (5, 10, 15, 20, 30, 60, 120):
        if span / step <= 14:
            return float(step)
    return 300.0


def write_plot(r: RunResult, ops: Sequence[Op], t0_ns: int, path: Path) -> None:
    series = buckets(ops, t0_ns)
    marks: list[tuple[float, str]] = []
    if r.workload_end_s is not None:
        marks.append((r.workload_end_s, "clients stop"))
    end = max(r.workload_end_s or 0.0, len(series["ok"]) * BUCKET_S)
    if r.healed_s is not None and r.converged_s is not None:
        marks.append((r.healed_s + r.converged_s, f"converged (+{r.converged_s:.1f}s)"))
        end = max(end, r.healed_s + r.converged_s)
    elif r.healed_s is not None:
        marks.append((r.healed_s, "healed; never converged"))
        end = max(end, r.healed_s)
    ivs = list(r.intervals)
    if ivs:
        end = max(end, *(iv.end_s or 0.0 for iv in ivs))
    title = f"run {r.seed}: {r.klass}, {r.mode}, {sum(r.ops.values())} ops, {len(ivs)} faults"
    path.write_text(plot_svg(title, series, ivs, end_s=end * 1.02, marks=marks))
