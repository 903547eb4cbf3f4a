"""Start-up latency of the command line and of the lazily-imported layers.

Target (foundation issue: heavy imports are lazy): `fourd --help` answers in under 1.5 s and
importing `renderers` + `pipelines` adds under 0.5 s to torch's own import.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks import median_time, parse_args, report


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    repeats = 3 if args.quick else 7

    def run(code: str) -> None:
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)

    baseline = median_time(lambda: run("import torch"), repeats)
    figures = {
        "fourd_help_s": median_time(lambda: run("import pipelines.cli as c; c.build_parser().format_help()"),
                                    repeats),
        # what our layers add on top of torch's own import (torch alone is ~2-3 s on 2 cores)
        "import_layers_over_torch_s": median_time(
            lambda: run("import renderers.cameras, renderers.scene, pipelines.config, pipelines.events, "
                        "pipelines.context"), repeats) - baseline,
        "torch_import_s": baseline,
    }
    report("startup", figures, {"fourd_help_s": ("<", 1.5), "import_layers_over_torch_s": ("<", 0.5)}, args.json)


if __name__ == "__main__":
    main()
