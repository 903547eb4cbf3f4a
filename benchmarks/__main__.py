"""Run every benchmark script and print one table of target against measured.

    python -m benchmarks [--quick] [--only NAME ...] [--out bench-results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    rows, failed = [], []
    for script in scripts:
        out = args.out / f"{script.stem}.json"
        cmd = [sys.executable, "-m", f"benchmarks.{script.stem}", "--json", str(out)]
        if args.quick:
            cmd.append("--quick")
        print(f"== {script.stem}", flush=True)
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0 or not out.exists():
            failed.append(script.stem)
            continue
        record = json.loads(out.read_text())
        for key, target in record["targets"].items():
            rows.append((record["name"], key, record["figures"].get(key), target, record["met"].get(key)))
    print(f"\n{'benchmark':<16} {'metric':<40} {'measured':>12} {'target':>12}  met")
    for name, key, value, target, met in rows:
        value_s = f"{value:.4g}" if value is not None else "-"
        print(f"{name:<16} {key:<40} {value_s:>12} {target['op'] + ' ' + format(target['value'], 'g'):>12}  "
              f"{'yes' if met else 'NO'}")
    for name in failed:
        print(f"{name:<16} failed to run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
