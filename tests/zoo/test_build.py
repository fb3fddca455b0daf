"""`python -m zoo.build`: builds entries through the export tool and skips what is up to date."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoo import build as zoo_build
from zoo.build import BuildContext, build_repository
from zoo.training import train_srgan

pytestmark = pytest.mark.xdist_group("zoo")


def _perturb_weights(srgan_dir: Path) -> None:
    from export.architectures import build

    options = json.loads((srgan_dir / train_srgan.REPORT_FILENAME).read_text())["architecture_options"]
    model = build("srgan-x4", **options)
    path = srgan_dir / train_srgan.WEIGHTS_FILENAME
    model.load_weights(path)
    model.set_weights([w + np.float32(1e-3) for w in model.get_weights()])
    model.save_weights(path)


def test_second_build_skips_and_a_changed_input_rebuilds_only_its_entry(
    srgan_copy: Path, tmp_path: Path
) -> None:
    ctx = BuildContext(repo=tmp_path / "models", work_dir=tmp_path / "work", srgan_dir=srgan_copy)
    only = ["srgan-x4", "dcgan-mnist"]

    assert build_repository(ctx, only) == {"srgan-x4": "built", "dcgan-mnist": "built"}
    assert build_repository(ctx, only) == {"srgan-x4": "up to date", "dcgan-mnist": "up to date"}
    _perturb_weights(srgan_copy)
    assert build_repository(ctx, only) == {"srgan-x4": "built", "dcgan-mnist": "up to date"}
    assert build_repository(ctx, only, force=True) == {"srgan-x4": "built", "dcgan-mnist": "built"}


def test_cards_say_what_each_entry_is(srgan_copy: Path, tmp_path: Path) -> None:
    ctx = BuildContext(repo=tmp_path / "models", work_dir=tmp_path / "work", srgan_dir=srgan_copy)
    build_repository(ctx, ["srgan-x4", "mlp-cifar10"])
    srgan = json.loads((ctx.repo / "srgan-x4" / "model.json").read_text())
    demo = json.loads((ctx.repo / "mlp-cifar10" / "model.json").read_text())

    assert srgan["kind"] == "upscaler" and srgan["scale"] == 4 and srgan["demo_weights"] is False
    assert "chelsea" in srgan["description"] and "bicubic" in srgan["description"]
    assert demo["demo_weights"] is True and demo["flat_output"] is True
    assert demo["description"].startswith("untrained demo weights")


def test_command_line_reports_what_it_built_and_skipped(
    srgan_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--repo", str(tmp_path / "models"), "--only", "dcgan-mnist", "--srgan-dir", str(srgan_copy)]
    assert zoo_build.main(argv) == 0
    assert zoo_build.main(argv) == 0
    err = capsys.readouterr().err

    assert "built       dcgan-mnist" in err
    assert "up to date  dcgan-mnist" in err
    assert "0 built, 1 up to date" in err


def test_an_unknown_entry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        zoo_build.main(["--repo", str(tmp_path), "--only", "stylegan"])


def test_faces64_builds_without_pytorch(tmp_path: Path) -> None:
    """A fresh machine has no PyTorch: block `import torch` and build the ported entry."""
    import subprocess
    import sys

    script = (
        # A finder that refuses torch (not sys.modules['torch'] = None: SciPy probes sys.modules['torch']).
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from zoo.build import main\n"
        f"main(['--repo', {str(tmp_path / 'models')!r}, '--work-dir', {str(tmp_path / 'work')!r},"
        " '--only', 'faces64'])\n"
        "assert 'gan_face_generate.models' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "built       faces64" in done.stderr
    assert (tmp_path / "models" / "faces64" / "model.onnx").is_file()
