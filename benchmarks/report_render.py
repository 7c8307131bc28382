"""Render time and size of the report for a 100-step result (issue 5: ≤ 2 s and ≤ 2 MB).

Builds the 100-step fixture the report tests use (``tests/report_fixtures.make_result(n_steps=
100)``, with its baseline and ``make_history()``), then times ``perfgate.report.write_report``
into a fresh folder three times in this process. The first call also pays the lazy imports
(matplotlib, jinja2), which every real run pays once; it is reported separately, and the import
time of the render stack is measured on its own before. Sizes are of the files written.

    python benchmarks/report_render.py            # 3 renders (+ import), a few seconds
    python benchmarks/report_render.py --quick    # the same, 1 render
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import _common as c

sys.path.insert(0, str(c.REPO))
sys.path.insert(0, str(c.REPO / "tests"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 render instead of 3")
    ap.add_argument("--reps", type=int, help="renders (default 3; quick 1)")
    ap.add_argument("--steps", type=int, default=100, help="steps in the fixture (default 100)")
    ap.add_argument("--idle-timeout", type=float, help="max wait for an idle machine (s)")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    idle_timeout = c.idle_timeout(args.idle_timeout, args.quick, 120)

    idle = c.wait_idle(timeout_s=idle_timeout)
    t0 = time.perf_counter()
    report = importlib.import_module("perfgate.report")
    importlib.import_module("perfgate.report.html")  # matplotlib + jinja2, imported lazily by runs
    import_s = time.perf_counter() - t0
    fixtures = importlib.import_module("report_fixtures")
    t0 = time.perf_counter()
    result = fixtures.make_result(n_steps=args.steps)
    history = fixtures.make_history()
    build_s = time.perf_counter() - t0

    renders = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for i in range(reps):
            out = Path(tmp) / f"r{i}"
            t0 = time.perf_counter()
            files = report.write_report(result, out, history=history)
            dt = time.perf_counter() - t0
            sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
            renders.append(
                {"render_s": dt, "sizes": sizes, "html_bytes": files.html.stat().st_size}
            )
            c.note(
                f"render {i + 1}: {dt:.3f} s, index.html {sizes.get('index.html', 0) / 1e6:.2f} MB"
            )

    times = [r["render_s"] for r in renders]
    sizes = renders[-1]["sizes"]
    rows = [
        ("steps in the result", len(result.steps)),
        ("import perfgate.report + html (s)", f"{import_s:.3f}"),
        ("render times (s)", ", ".join(f"{t:.3f}" for t in times)),
        ("median render (s)", f"{c.median(times):.3f}"),
        ("index.html (MB)", f"{sizes.get('index.html', 0) / 1e6:.3f}"),
        *(
            (f"{name} (kB)", f"{size / 1e3:.1f}")
            for name, size in sizes.items()
            if name != "index.html"
        ),
        ("all files (MB)", f"{sum(sizes.values()) / 1e6:.3f}"),
    ]
    table = c.md_table(("what", "value"), rows)
    summary = (
        f"goal: render ≤ 2 s (median {c.median(times):.2f} s; first call {times[0]:.2f} s, "
        f"+{import_s:.2f} s imports) and index.html ≤ 2 MB "
        f"({sizes.get('index.html', 0) / 1e6:.2f} MB)."
    )
    markdown = table + "\n\n" + summary
    print(markdown)
    path = c.Report(
        name="report_render",
        quick=args.quick,
        params={"steps": args.steps, "reps": reps, "fixture": "tests/report_fixtures.make_result"},
        data={"import_s": import_s, "fixture_build_s": build_s, "renders": renders, "idle": idle},
    ).write(markdown)
    c.note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
