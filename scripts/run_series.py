"""Execute the notebook series in order with papermill, in place, and time every notebook.

    python scripts/run_series.py                 # PROFILE=auto: full on a CUDA GPU, ci on a CPU
    python scripts/run_series.py --profile full  # force the full profile

Each notebook is executed into build/run/ first and copied over notebooks/ only when it
succeeded, so a failure never leaves a half-executed notebook behind. In the full profile the
timings are written to results/series.json (device, seconds per notebook, total), which the
README's results section reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import papermill as pm

    from helpers.profile import device_name, resolve_profile

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="auto", help="auto, full or ci (default auto)")
    parser.add_argument("notebooks", nargs="*", help="default: notebooks/[0-9][0-9]_*.ipynb")
    args = parser.parse_args(argv)
    profile = resolve_profile(args.profile)
    notebooks = [Path(p) for p in args.notebooks] or sorted(
        (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    run_dir = ROOT / "build" / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for nb in notebooks:
        print(f"== {nb.name} (PROFILE={profile})", flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(run_dir / nb.name), parameters={"PROFILE": profile},
                            cwd=str(ROOT), progress_bar=True)
        seconds[nb.stem] = round(time.perf_counter() - t0, 1)
        shutil.copy(run_dir / nb.name, nb)
        print(f"   {seconds[nb.stem]:.1f} s", flush=True)
    total = round(sum(seconds.values()), 1)
    print(f"series: {total:.1f} s")
    if profile == "full" and len(notebooks) > 1:
        out = {"device": device_name(), "profile": profile, "notebook_seconds": seconds,
               "total_seconds": total}
        (ROOT / "results" / "series.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
