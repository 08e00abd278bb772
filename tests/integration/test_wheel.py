"""The built wheel works on its own: package data comes from importlib.resources, not the checkout.

Builds the wheel, installs it (without dependencies) into a fresh virtual environment whose only
other path is the test environment's site-packages (for the dependencies; the checkout and its
editable install are not on it), then runs ``cairn verify`` and ``cairn scan`` from outside the
repository.
"""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_installed_wheel_verifies_and_scans(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("cairn-*.whl"))
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), *map(str, args)], capture_output=True, text=True, cwd=work, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    where = run("-c", "import integrity, integrity.settings as s; print(integrity.__file__); "
                      "print(s.package_data('catalogs', 'demo.yaml').is_file(), "
                      "s.package_data('trust_roots', 'production_trusted_root.json').is_file(), "
                      "s.package_data('allowlist.json').is_file())")
    assert where.returncode == 0, where.stderr
    assert str(site) in where.stdout and "True True True" in where.stdout, where.stdout
    weights = work / "model.safetensors"
    header = b'{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}'
    weights.write_bytes(len(header).to_bytes(8, "little") + header + b"abcd")
    cairn = env / "bin" / "cairn"
    assert subprocess.run([str(cairn), "key", "generate", "--out", str(work / "k")], cwd=work,
                          capture_output=True).returncode == 0
    signed = subprocess.run([str(cairn), "sign", str(weights), "--key", str(work / "k.key")], cwd=work,
                            capture_output=True, text=True)
    assert signed.returncode == 0, signed.stderr
    verified = subprocess.run([str(cairn), "verify", str(weights), "--key", str(work / "k.pub")], cwd=work,
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    scanned = subprocess.run([str(cairn), "scan", str(weights), "--json"], cwd=work, capture_output=True, text=True)
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    pickle = work / "evil.pkl"
    pickle.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    assert subprocess.run([str(cairn), "scan", str(pickle)], cwd=work, capture_output=True).returncode == 1
