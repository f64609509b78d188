"""Summarise py-spy raw profiles (collapsed stacks, as `--profiles DIR` of the benchmarks keeps them) as text.

For each `*.pyspy.txt` under the given folders: samples, the share of the event-loop thread and of worker
threads, the functions most often on top of the stack (self) and our own functions most often anywhere in it
(inclusive), as % of all samples (`bench.loadgen.summarise_profile`). Writes one `<name>.summary.txt` beside
each profile, or prints with `--print`.

    .venv/bin/python bench/profile_summary.py bench/results/profiles/before bench/results/profiles/after
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import summarise_profile  # noqa: E402


def render(path: Path, top: int) -> str:
    summary = summarise_profile(path, top=top)
    lines = [f"{path.name}: {summary['samples']} samples (py-spy, active threads)",
             "threads: " + ", ".join(f"{k} {v} %" for k, v in summary["threads_percent"].items()), "",
             "self (on top of the stack), % of samples:"]
    lines += [f"  {share:5.1f}  {name}" for name, share in summary["self_percent"]]
    lines += ["", "ours, inclusive (anywhere in the stack), % of samples:"]
    lines += [f"  {share:5.1f}  {name}" for name, share in summary["ours_inclusive_percent"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--print", action="store_true", help="print instead of writing .summary.txt files")
    args = parser.parse_args()
    for folder in args.folders:
        for raw in sorted(folder.glob("*.pyspy.txt")):
            text = render(raw, args.top)
            if args.print:
                print(text)
            else:
                raw.with_name(raw.name.replace(".pyspy.txt", ".summary.txt")).write_text(text)


if __name__ == "__main__":
    main()
