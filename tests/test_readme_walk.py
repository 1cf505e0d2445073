"""The README's walk from "my fine-tuned timm checkpoint and my image folder" to "the picked
checkpoint running in onnxruntime", run as it stands there on a tiny model and tiny data: only
the model, image size, training steps and budget are made small."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"supernet": {"model": "test_resnet", "image_size": 32, "steps": 8, "batch_size": 16,
                      "calib_batches": 2},
         "evaluation": {"repeats": 3, "warmup": 1, "batch_size": 16},
         "max_evals": 6,
         "refine": {"steps": 3, "recovery_steps": 3, "front_steps": 4}}


def block(name: str) -> str:
    """The fenced block after ``<!-- walk:name -->`` in the README."""
    found = re.search(rf"<!-- walk:{name} -->\n```\w*\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no walk:{name} block"
    return found.group(1)


def my_images(root: Path) -> None:
    """An image folder of two digit classes: train / val / test, 16 / 6 / 6 images each."""
    from PIL import Image

    from hybridmoo.data import digits

    data = digits(16)
    for split, part, n in (("train", data.train, 16), ("val", data.val, 6),
                           ("test", data.test, 6)):
        x, y = part.tensors
        for label, name in ((0, "zero"), (1, "one")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(x[y == label][:n]):
                grey = ((image[0] + 1) * 127.5).clamp(0, 255).byte().numpy()
                Image.fromarray(grey).convert("RGB").save(folder / f"{i}.png")


def my_checkpoint(path: Path) -> None:
    """The user's fine-tuned model: a timm test_resnet for the folder's two classes."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("test_resnet", num_classes=2)
    save_file(model.state_dict(), str(path), metadata={"architecture": "test_resnet"})


@pytest.mark.timeout(900)
def test_the_readme_walk_runs_as_written(tmp_path, monkeypatch, capsys):
    from hybridmoo.cli import main

    config = yaml.safe_load(block("config"))
    monkeypatch.chdir(tmp_path)
    my_images(tmp_path / config["supernet"]["data"]["root"])
    my_checkpoint(tmp_path / config["supernet"]["checkpoint"])
    for key, small in SMALL.items():  # the README's config, scaled down
        config[key] = {**config.get(key, {}), **small} if isinstance(small, dict) else small
    Path("my-model.yaml").write_text(yaml.safe_dump(config))

    for line in block("commands").strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "hybridmoo"
        assert main(argv[1:]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        if argv[1] == "search":
            assert "baseline, your model (FP32):" in out and "x smaller" in out
    assert (tmp_path / "deploy" / "manifest.json").is_file()

    exec(compile(block("deploy"), "README walk:deploy", "exec"), {})
    printed = capsys.readouterr().out
    assert re.match(r"model(\.int8)?\.onnx \[[01]( [01])*\]", printed), printed
