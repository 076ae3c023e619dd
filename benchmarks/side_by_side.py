"""Run benchmarks on two commits in one sitting, alternately, and write both results in one file.

A refactor claims "no regression beyond noise"; a figure from another day, another machine or
another load says nothing about that. This script checks out both commits into temporary
worktrees (nothing in this checkout is touched), runs each benchmark in base, head, base, head
order (`--rounds`), so drift on the machine falls on both, and keeps each run's own result JSON.

    python benchmarks/side_by_side.py --base 12cdae9 [--head HEAD] [--rounds 1] \
        --bench "live.py --levels 8,12" --bench "analyze_rtf.py --models base" [--name side_by_side]

Each tree runs with PYTHONPATH set to itself and ../shared linked beside it (the corpora the
benchmarks read), on this checkout's virtual environment.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(rev: str, parent: Path) -> Path:
    """A detached worktree of `rev` under `parent`, with ../shared beside it as in CI."""
    sha = _git("rev-parse", "--short", rev)
    tree = parent / sha / "repo"
    tree.parent.mkdir(parents=True)
    _git("worktree", "add", "--detach", str(tree), sha)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (tree.parent / "shared").symlink_to(shared.resolve())
    return tree


def run_bench(tree: Path, bench: str, timeout_s: float) -> dict:
    """Run one benchmark command line in `tree`; returns the result file it wrote (the newest)."""
    import json

    results = tree / "benchmarks" / "results"
    before = {p: p.stat().st_mtime for p in results.glob("*.json")}
    script, *args = shlex.split(bench)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    wall = round(time.monotonic() - t0, 1)
    if proc.returncode != 0:
        return {"bench": bench, "error": proc.stderr.strip().splitlines()[-5:], "wall_s": wall}
    fresh = [p for p in results.glob("*.json") if before.get(p) != p.stat().st_mtime]
    newest = max(fresh, key=lambda p: p.stat().st_mtime)
    return {"bench": bench, "file": newest.name, "wall_s": wall, "result": json.loads(newest.read_text())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit before the change")
    parser.add_argument("--head", default="HEAD", help="the commit with the change")
    parser.add_argument("--bench", action="append", required=True,
                        help="a benchmark script under benchmarks/ with its arguments (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="base/head pairs per benchmark")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark run")
    parser.add_argument("--name", default="side_by_side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        trees = {"base": checkout(args.base, Path(tmp)), "head": checkout(args.head, Path(tmp))}
        commits = {k: _git("rev-parse", "--short", "HEAD", cwd=t) for k, t in trees.items()}
        runs: list[dict] = []
        try:
            for bench in args.bench:
                for round_no in range(args.rounds):
                    for which in ("base", "head"):
                        print(f"[{which} {commits[which]}] {bench} (round {round_no + 1})", file=sys.stderr, flush=True)
                        runs.append({"tree": which, "commit": commits[which], "round": round_no + 1,
                                     **run_bench(trees[which], bench, args.timeout)})
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    write_result(args.name, {"base": commits["base"], "head": commits["head"], "order": "base, head per round",
                             "runs": runs})
    return 0 if not any("error" in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
