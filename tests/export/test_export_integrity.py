"""save_network / load_network and the digests that refuse a changed, missing or escaping file."""

import json

import pytest
import torch

import hybridmoo
from hybridmoo.errors import ConfigError
from hybridmoo.export import load_network, load_subnet, read_manifest, save_network
from hybridmoo.export.files import MANIFEST, _self_digest
from hybridmoo.export.network import WEIGHTS
from hybridmoo.supernet import make_supernet

torch.set_num_threads(1)
CHANGED = "sha256 mismatch, the file was changed after export"


@pytest.fixture(scope="module")
def net():
    sn = make_supernet("test_resnet", num_classes=10, image_size=32)
    sn.calibrate([torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))])
    return sn.extract(sn.smallest())


@pytest.fixture
def saved(tmp_path, net):
    save_network(net, tmp_path / "net", meta={"solver": "mgda", "steps": 3})
    return tmp_path / "net"


def test_a_saved_network_loads_with_the_same_outputs(saved, net):
    assert sorted(p.name for p in saved.iterdir()) == [MANIFEST, WEIGHTS]
    loaded = load_network(saved)
    assert not loaded.training
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    manifest = read_manifest(saved / MANIFEST)
    assert manifest["meta"] == {"solver": "mgda", "steps": 3}
    assert set(manifest["files"]) == {WEIGHTS} and len(manifest["files"][WEIGHTS]) == 64
    assert hybridmoo.load_subnet is load_subnet


def test_changed_weights_are_refused(saved):
    raw = bytearray((saved / WEIGHTS).read_bytes())
    raw[-3] ^= 0x01  # one bit of one weight
    (saved / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=f"{WEIGHTS}: {CHANGED}"):
        load_subnet(saved)


@pytest.mark.parametrize("edit", [
    lambda m: m["meta"].update(steps=4),
    lambda m: m["structure"]["quant"].clear(),
    lambda m: m["files"].update({WEIGHTS: "0" * 64}),
])
def test_a_changed_manifest_is_refused(saved, edit):
    manifest = json.loads((saved / MANIFEST).read_text())
    edit(manifest)
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=f"{MANIFEST}: {CHANGED}"):
        load_subnet(saved)


def test_a_truncated_manifest_is_refused(saved):
    text = (saved / MANIFEST).read_text()
    (saved / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match=CHANGED):
        load_subnet(saved)


def test_a_missing_file_is_refused(saved, tmp_path):
    (saved / WEIGHTS).unlink()
    with pytest.raises(ConfigError, match=f"{WEIGHTS}: {CHANGED} \\(the file is missing\\)"):
        load_subnet(saved)
    with pytest.raises(ConfigError, match="no such export directory"):
        load_subnet(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no manifest\.json"):
        load_subnet(tmp_path / "empty")


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", ".hidden", "a/b"])
def test_file_names_cannot_leave_the_directory(saved, name):
    # a crafted manifest with a valid self-digest still cannot name files elsewhere
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["files"][name] = "0" * 64
    manifest["sha256"] = _self_digest(manifest)
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="is not a plain file name"):
        load_subnet(saved)
