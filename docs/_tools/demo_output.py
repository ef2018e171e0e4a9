"""Run ``synopsloss demo`` at its defaults and keep what it prints: the one place the docs' demo figures come from.

``python docs/_tools/demo_output.py`` rewrites ``docs/_generated/demo.txt`` and the quick run's
``demo-quick.txt`` (one thread, seed 0, about a minute and a half on a quiet core); ``docs/cli.md`` includes that file, and ``tests/test_docs.py`` checks that every
page, the README and the training notebook quote its figures (and, in a slow test, that the demo still
prints them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "_generated" / "demo.txt"
COMMAND = ["synopsloss", "demo", "--quiet", "--no-plot"]


def run_demo(*args: str) -> str:
    """The demo's standard output with ``args`` (one thread; the run-time figures "(N s)" removed)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-m", "synopsloss", *COMMAND[1:], *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=900, check=True)
    return re.sub(r" \(\d+ s\)", "", proc.stdout)


def figures(text: str) -> Dict[str, str]:
    """The figures a page may quote, as the demo prints them: accuracies, synops and their ratios."""
    acc = re.search(r"^test accuracy\s+([\d.]+%)\s+([\d.]+%)", text, re.M)
    driven = re.search(r"^network-driven synops / sample\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)x fewer", text, re.M)
    total = re.search(r"^total synops / sample\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)x fewer", text, re.M)
    target = re.search(r"^synops target per sample \(driven: ([\d,]+)\)", text, re.M)
    reached = re.search(r"^reached ([\d,]+) network-driven synops per sample on the test set: ([+-][\d.]+%) from",
                        text, re.M)
    if not (acc and driven and total and target and reached):
        raise ValueError(f"the demo's summary has changed its layout:\n{text}")
    return {
        "acc_before": acc.group(1), "acc_after": acc.group(2),
        "driven_before": driven.group(1), "driven_after": driven.group(2), "driven_ratio": driven.group(3),
        "total_before": total.group(1), "total_after": total.group(2), "total_ratio": total.group(3),
        "target": target.group(1), "reached": reached.group(1), "off": reached.group(2),
    }


#: the quick run that ``docs/cli.md`` shows, and where its output goes
QUICK = ["--epochs", "8", "--train-samples", "720"]
QUICK_OUTPUT = ROOT / "docs" / "_generated" / "demo-quick.txt"


def main() -> int:
    for args, path in (([], OUTPUT), (QUICK, QUICK_OUTPUT)):
        text = run_demo(*args)
        figures(text)  # refuses an output whose summary cannot be read
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"$ {' '.join(COMMAND + args)}\n{text}")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
