"""One `cairn demo` run (ingestion + a tiny fine-tune + release) shared by every release test.

The run happens once per test session, even across pytest-xdist workers: the first worker to
take the file lock runs it and leaves ``done.json``; the others wait and reuse the result. The
spec is the demo's own with a handful of training steps and a lenient accuracy floor, so the
whole pipeline runs in test time; the gate's logic is tested separately with real thresholds.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "integrity" / "data" / "releases" / "demo.yaml"
MODEL = "digits-classifier"


@dataclass(frozen=True)
class ReleaseDemo:
    home: Path
    spec: Path
    release: Path
    returncode: int
    output: str
    #: The report server URL the demo's asset links point to (a test serves it with tests.support.reports).
    reports_url: str = ""


def tiny_spec(path: Path, **gate: object) -> Path:
    """The demo spec with a few training steps and cheap adversarial checks (gate overrides allowed)."""
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["training"].update({"max_steps": 4, "epochs": 1})
    # A model trained for 4 steps is barely better than chance, so any trigger moves it: its attack
    # success says nothing (the trigger bar is tested on its own, with max_attack_success overridden).
    data["gate"].update({"min_clean_accuracy": 0.05, "max_attack_success": 1.0, "adversarial_samples": 16,
                         "pgd_steps": 2, **gate})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shared_release_demo(tmp_path_factory: pytest.TempPathFactory) -> ReleaseDemo:
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "release-demo"
    with FileLock(str(root / "release-demo.lock")):
        done = folder / "done.json"
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            spec = tiny_spec(folder / "tiny-release.yaml")
            home = folder / "home"
            from tests.support import free_port

            reports_url = f"http://127.0.0.1:{free_port()}"
            env = {**os.environ, "CAIRN_HOME": str(home), "CAIRN_RELEASE_SPEC": str(spec),
                   "DAGSTER_DISABLE_TELEMETRY": "1", "CAIRN_REPORTS_URL": reports_url}
            env.pop("CAIRN_STORE", None)
            run = subprocess.run([str(Path(sys.executable).parent / "cairn"), "demo", "--home", str(home)],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
            releases = sorted((home / "releases").glob(f"{MODEL}-*"))
            done.write_text(json.dumps({"home": str(home), "spec": str(spec), "returncode": run.returncode,
                                        "release": str(releases[-1]) if releases else "",
                                        "output": run.stdout + run.stderr, "reports_url": reports_url}))
    data = json.loads((folder / "done.json").read_text())
    return ReleaseDemo(Path(data["home"]), Path(data["spec"]), Path(data["release"]), data["returncode"],
                       data["output"], data.get("reports_url", ""))


def private_home(demo: ReleaseDemo, dest: Path) -> Path:
    """A private copy of the demo home (without the Dagster instance and releases), so a test may break it."""
    import shutil

    def top_level(folder: str, names: list[str]) -> set[str]:
        return {"dagster", "releases"} & set(names) if Path(folder) == demo.home else set()

    shutil.copytree(demo.home, dest, ignore=top_level, symlinks=True)
    return dest
