"""Figures of a `ptctl sim compare` run, drawn for a paper: each one titled with the trace, the
cluster size and the slot; policies keep one colour in every figure; legends sit outside the
data; bars carry their values. matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptctl.sim.results import SimResult

KINDS = (("late", "#d62728"), ("unfinished", "#7f7f7f"), ("declined", "#ff9896"))


@dataclass(frozen=True)
class PlotContext:
    """What a reader needs to know to read a figure: which trace, on how big a cluster."""

    trace: str
    gpus: int
    slot_s: float
    baseline: str

    def subtitle(self, jobs: int) -> str:
        return f"{self.trace}: {jobs} jobs on {self.gpus} GPUs, {self.slot_s:g} s slot"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _colours(names: list[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_comparison(results: dict[str, SimResult], out_dir: str | Path,
                    ctx: PlotContext) -> list[Path]:
    """Write violations_cost.png, deadline_cdf.png and gpu_use.png; returns their paths."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = _colours(list(results))
    paths = []
    for draw, name in ((_violations_cost, "violations_cost.png"),
                       (_deadline_cdf, "deadline_cdf.png"), (_gpu_use, "gpu_use.png")):
        fig = draw(plt, results, ctx, colours)
        paths.append(_save(fig, out_dir / name))
        plt.close(fig)
    return paths


def _label_bars(ax, bars, labels: list[str]) -> None:
    for bar, text in zip(bars, labels):
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8)


def _violations_cost(plt, results, ctx, colours):
    """Left: SLO violations per policy, stacked by kind, with count and rate on top. Right:
    GPU-hours per policy with the value and the ratio to the baseline on top."""
    names = list(results)
    summaries = [results[n].summary() for n in names]
    jobs = summaries[0]["jobs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    bottom = [0] * len(names)
    for kind, colour in KINDS:
        values = [s[kind] for s in summaries]
        left.bar(names, values, bottom=bottom, color=colour, label=kind, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values)]
    totals = left.bar(names, bottom, fill=False, linewidth=0, width=0.6)
    _label_bars(left, totals, [f"{t} ({t / jobs:.1%})" for t in bottom])
    left.set_ylabel(f"SLO violations (of {jobs} jobs)")
    left.set_title("Deadlines missed")
    left.set_ylim(0, max(max(bottom), 1) * 1.18)
    left.legend(loc="upper left", bbox_to_anchor=(0, -0.2), ncol=3, frameon=False)

    hours = [s["gpu_hours"] for s in summaries]
    bars = right.bar(names, hours, color=[colours[n] for n in names], width=0.6)
    base = results[ctx.baseline].summary()["gpu_hours"]
    _label_bars(right, bars, [(f"{h:,.0f}" if h >= 100 else f"{h:.1f}")
                              + (f"\n{h / base:.2f}×" if base else "")
                              for h in hours])
    right.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    right.set_ylabel("GPU-hours")
    right.set_title(f"GPU-hours held (ratio to {ctx.baseline})")
    right.set_ylim(0, max(max(hours), 1) * 1.25)
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"SLO violations and cost per policy\n{ctx.subtitle(jobs)}")
    fig.tight_layout()
    return fig


def _hours_label(h: float) -> str:
    sign, h = ("−" if h < 0 else ""), abs(h)
    return "0" if h == 0 else f"{sign}{h / 24:g} d" if h >= 24 else f"{sign}{h:g} h"


def _deadline_cdf(plt, results, ctx, colours):
    """Share of all jobs finished by (deadline + x): jobs that never finish never enter, so a
    curve ends at its finished share, drawn on to the right edge; the legend counts them."""
    fig, ax = plt.subplots(figsize=(8, 4))
    jobs = len(next(iter(results.values())).outcomes)
    deltas = {name: sorted((o.finish_s - o.deadline_s) / 3600 for o in r.outcomes
                           if o.finish_s is not None) for name, r in results.items()}
    finite = [d for ds in deltas.values() for d in ds] or [0.0]
    lo, hi = min(min(finite), -1.0) * 1.3, max(max(finite), 1.0) * 1.3
    for name, ds in deltas.items():
        s = results[name].summary()
        label = f"{name} ({s['declined']} declined, {s['unfinished']} unfinished)"
        ys = [0.0] + [(i + 1) / jobs for i in range(len(ds))]
        ax.step([lo] + ds + [hi], ys + ys[-1:], where="post", color=colours[name],
                label=label, linewidth=1.3)
    ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
    ax.annotate("deadline", (0, 1.02), xycoords=("data", "axes fraction"), ha="center",
                fontsize=8)
    ax.set_xscale("symlog", linthresh=1.0)
    ticks = [t * sign for t in (1, 6, 24, 168, 720) for sign in (-1, 1)] + [0]
    ticks = sorted(t for t in ticks if lo <= t <= hi)
    ax.set_xticks(ticks, [_hours_label(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(lo, hi)
    ax.set_xlabel("finish time − deadline (linear within ±1 h, logarithmic beyond)")
    ax.set_ylabel("fraction of all jobs")
    ax.set_ylim(0, 1.02)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
              title="policy (jobs never finished)")
    ax.set_title(f"When jobs finish, relative to their deadline\n{ctx.subtitle(jobs)}", pad=14)
    fig.tight_layout()
    return fig


def _gpu_use(plt, results, ctx, colours):
    """One panel per policy on shared axes: overlaid step curves of five policies are
    unreadable. The cluster's capacity is a dashed line in each."""
    names = list(results)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.25 + 1.05 * len(names)),
                             sharex=True, sharey=True, squeeze=False)
    from matplotlib.ticker import MaxNLocator

    t0 = min(o.arrival_s for r in results.values() for o in r.outcomes)
    jobs = len(results[names[0]].outcomes)
    for i, (ax, name) in enumerate(zip(axes[:, 0], names)):
        timeline = results[name].timeline
        xs = [(t - t0) / 3600 for t, _ in timeline]
        ax.step(xs, [u for _, u in timeline], where="post", color=colours[name],
                linewidth=0.9, label=name, zorder=3)  # over the capacity line it meets
        ax.fill_between(xs, [u for _, u in timeline], step="post", color=colours[name],
                        alpha=0.25, linewidth=0)
        ax.axhline(ctx.gpus, color="black", linestyle="--", linewidth=0.8,
                   label=f"capacity ({ctx.gpus} GPUs)" if i == 0 else None)
        ax.set_ylim(0, ctx.gpus * 1.12)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.set_ylabel("GPUs held")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    axes[-1, 0].set_xlabel("hours since the first arrival")
    fig.suptitle(f"GPUs held over time\n{ctx.subtitle(jobs)}")
    fig.tight_layout()
    return fig
