"""Finding, downloading, checking and loading weights files."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from impasto import weights as W
from impasto.errors import ImpastoError

from conftest import random_vgg_features

OFFICIAL = "vgg19-dcbb9e9d.pth"
CAFFE_INPUT = "caffe: BGR channel order, 0-255 range, mean [103.939, 116.779, 123.68] subtracted, no std division"

PLACEHOLDER = b"not weights"


def touch(path: Path) -> Path:
    """A placeholder file: the resolver only looks at names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER)
    return path


def conv_keys(model: str) -> set[str]:
    return {f"{i}.{kind}" for i in W.conv_indices(model) for kind in ("weight", "bias")}


# -- where the resolver looks ----------------------------------------------------------------------


def test_explicit_file_wins(tmp_path, monkeypatch):
    explicit = touch(tmp_path / "mine" / "anything.pth")
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(touch(tmp_path / "env" / "vgg19.pth")))
    touch(W.cache_dir() / "vgg19.safetensors")
    assert W.resolve("vgg19", str(explicit)) == explicit


def test_explicit_folder_is_searched_by_candidate_names_best_first(tmp_path):
    folder = tmp_path / "weights"
    touch(folder / "vgg19.pth")
    touch(folder / "unrelated.safetensors")
    assert W.resolve("vgg19", str(folder)) == folder / "vgg19.pth"
    touch(folder / OFFICIAL)
    assert W.resolve("vgg19", str(folder)) == folder / OFFICIAL
    touch(folder / "vgg19-caffe-features.safetensors")
    assert W.resolve("vgg19", str(folder)) == folder / "vgg19-caffe-features.safetensors"
    touch(folder / "vgg16-caffe-features.safetensors")
    assert W.resolve("vgg16", str(folder)) == folder / "vgg16-caffe-features.safetensors"


def test_environment_variable_is_used_without_an_explicit_path(tmp_path, monkeypatch):
    folder = tmp_path / "env"
    touch(folder / "vgg19.safetensors")
    touch(W.cache_dir() / "vgg19.pth")  # the env folder comes before the cache
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(folder))
    assert W.resolve("vgg19") == folder / "vgg19.safetensors"
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(folder / "vgg19.safetensors"))
    assert W.resolve("vgg19") == folder / "vgg19.safetensors"


def test_a_missing_path_says_it_came_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_WEIGHTS", str(tmp_path / "gone"))
    with pytest.raises(ImpastoError, match=r"^weights .*gone \(from \$IMPASTO_WEIGHTS\): no such file or folder$"):
        W.resolve("vgg19")
    with pytest.raises(ImpastoError, match=r"^weights .*given: no such file or folder$"):  # an explicit one wins, and is not blamed on it
        W.resolve("vgg19", str(tmp_path / "given"))


def test_folder_without_the_file_falls_back_to_the_cache(tmp_path):
    cached = touch(W.cache_dir() / "vgg19.pth")
    (tmp_path / "empty").mkdir()
    assert W.resolve("vgg19", str(tmp_path / "empty")) == cached


def test_cache_dir_is_impasto_home_and_comes_before_torch_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "home"))
    hub_file = touch(W.torch_hub_dir() / OFFICIAL)
    assert W.resolve("vgg19") == hub_file
    cached = touch(tmp_path / "home" / "vgg19.safetensors")
    assert W.cache_dir() == tmp_path / "home"
    assert W.resolve("vgg19") == cached


def test_torch_hub_checkpoint_with_the_official_name_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    found = touch(tmp_path / "hub" / "checkpoints" / OFFICIAL)
    assert W.resolve("vgg19") == found


def test_explicit_path_that_does_not_exist(tmp_path):
    with pytest.raises(ImpastoError, match="no such file or folder"):
        W.resolve("vgg19", str(tmp_path / "nope.pth"))


def test_missing_weights_offline_explains_where_to_put_them(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(ImpastoError) as info:
        W.resolve("vgg19")
    message = str(info.value)
    assert OFFICIAL in message
    assert W.OFFICIAL_URLS["vgg19"] in message
    assert str(W.cache_dir()) in message
    assert "Network is unreachable" in message
    assert not [p for p in W.cache_dir().iterdir() if p.name.endswith(".part")]
    with pytest.raises(ImpastoError, match="downloads are off"):
        W.resolve("vgg19", download=False)


# -- downloads ------------------------------------------------------------------------------------


class FakeResponse:
    """What urlopen returns, serving bytes from memory."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self.stream = io.BytesIO(data)
        self.headers = {"Content-Length": str(len(data))}
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.stream.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return self.stream.read(n if self.fail_after is None else min(n, self.fail_after))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def serve(monkeypatch, data: bytes, fail_after: int | None = None) -> list[str]:
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(data, fail_after)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_writes_the_file_and_checks_its_hash(tmp_path, monkeypatch):
    data = os.urandom(3 << 20)  # several read chunks
    prefix = hashlib.sha256(data).hexdigest()[:8]
    requested = serve(monkeypatch, data)
    target = tmp_path / "dl" / f"vgg19-{prefix}.pth"
    assert W.download_file("https://example.invalid/x.pth", target) == target
    assert requested == ["https://example.invalid/x.pth"]
    assert target.read_bytes() == data
    assert leftovers(target.parent) == []


def test_download_with_the_wrong_hash_leaves_nothing_behind(tmp_path, monkeypatch):
    serve(monkeypatch, b"definitely not the official weights")
    target = tmp_path / "vgg19-deadbeef.pth"
    with pytest.raises(ImpastoError, match=r"^the download of https://example.invalid/vgg19-deadbeef.pth does not have the expected sha256 \(deadbeef…\): it was cut short"):
        W.download_file("https://example.invalid/vgg19-deadbeef.pth", target)
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    serve(monkeypatch, os.urandom(1 << 16), fail_after=1 << 12)
    target = tmp_path / "vgg19.pth"
    with pytest.raises(OSError):
        W.download_file("https://example.invalid/vgg19.pth", target)
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_resolver_downloads_into_the_cache_once(tmp_path, monkeypatch, vgg19_state):
    saved = tmp_path / "served.pth"
    torch.save(vgg19_state, saved)
    data = saved.read_bytes()
    name = f"vgg19-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setitem(W.OFFICIAL_URLS, "vgg19", f"https://example.invalid/models/{name}")
    requested = serve(monkeypatch, data)
    weights = W.load_for(None)
    assert weights.path == W.cache_dir() / name
    assert weights.model == "vgg19"
    assert requested == [f"https://example.invalid/models/{name}"]
    assert W.load_for(None).path == weights.path  # the second time it is found in the cache
    assert len(requested) == 1


# -- loading --------------------------------------------------------------------------------------


def full_state_dict(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole torchvision VGG checkpoint: features plus the classifier."""
    return dict(features) | {"classifier.0.weight": torch.zeros(4, 8), "classifier.0.bias": torch.zeros(4)}


LAYOUTS = {
    "features-only.safetensors": lambda s: s,
    "features-only.pth": lambda s: s,
    "full.pth": full_state_dict,
    "full.safetensors": full_state_dict,
    "unprefixed.pth": lambda s: {k[len("features."):]: v for k, v in s.items()},
    "wrapped.pth": lambda s: {"state_dict": s},
    "data-parallel.pth": lambda s: {"module." + k: v for k, v in s.items()},
    "half.pth": lambda s: {k: v.half() for k, v in s.items()},
}


def save(path: Path, state: dict, metadata: dict[str, str] | None = None) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata=metadata)
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_supported_layouts_load(tmp_path, vgg19_state, name):
    path = save(tmp_path / name, LAYOUTS[name](vgg19_state))
    weights = W.load(path)
    assert (weights.model, weights.convention, weights.path) == ("vgg19", "torchvision", path)
    assert set(weights.state_dict) == conv_keys("vgg19")
    for key, value in weights.state_dict.items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, vgg19_state["features." + key], atol=1e-2 if name == "half.pth" else 0)


def test_model_is_inferred_from_the_keys(tmp_path, vgg19_state):
    vgg16 = save(tmp_path / "a.pth", random_vgg_features("vgg16", seed=3))
    vgg19 = save(tmp_path / "b.pth", vgg19_state)
    assert W.load(vgg16).model == "vgg16"
    assert set(W.load(vgg16).state_dict) == conv_keys("vgg16")
    assert W.load(vgg19).model == "vgg19"
    assert W.load_for(None, str(vgg16)).model == "vgg16"  # a weights file decides when no model is forced


def test_safetensors_metadata_declares_model_and_input_convention(tmp_path, vgg19_state):
    path = save(tmp_path / "caffe.safetensors", vgg19_state, {"arch": "vgg19", "input": CAFFE_INPUT})
    weights = W.load(path)
    assert (weights.model, weights.convention) == ("vgg19", "caffe")
    lying = save(tmp_path / "lying.safetensors", vgg19_state, {"arch": "vgg16"})
    with pytest.raises(ImpastoError, match="metadata says vgg16"):
        W.load(lying)


@pytest.mark.parametrize(
    "text, convention",
    [(CAFFE_INPUT, "caffe"), ("Caffe", "caffe"), ("BGR 0-255", "caffe"), ("torchvision: RGB, ImageNet mean/std", "torchvision"), ("", "torchvision")],
)
def test_parse_convention(text, convention):
    assert W.parse_convention(text) == convention


def test_forcing_the_other_model_is_refused(tmp_path, vgg19_state):
    path = save(tmp_path / "v.pth", vgg19_state)
    with pytest.raises(ImpastoError, match="vgg16"):
        W.load(path, "vgg16")


def test_wrong_shape_names_the_file_and_the_tensor(tmp_path, vgg19_state):
    state = dict(vgg19_state)
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    path = save(tmp_path / "odd.safetensors", state)
    with pytest.raises(ImpastoError) as info:
        W.load(path)
    assert str(path) in str(info.value)
    assert "features.0.weight" in str(info.value)


@pytest.mark.parametrize("key", ["features.10.weight", "features.34.bias"])
def test_missing_tensor_is_named(tmp_path, vgg19_state, key):
    state = {k: v for k, v in vgg19_state.items() if k != key}
    path = save(tmp_path / "partial.pth", state)
    with pytest.raises(ImpastoError, match=key.replace(".", r"\.")):
        W.load(path)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = save(tmp_path / "resnet.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)})
    with pytest.raises(ImpastoError, match="not VGG16/VGG19"):
        W.load(path)


def test_hash_in_the_name_is_checked(tmp_path, vgg19_state):
    good = save(tmp_path / "tmp.pth", vgg19_state)
    prefix = W.sha256_of(good)[:8]
    renamed = good.rename(tmp_path / f"vgg19-{prefix}.pth")
    assert W.load(renamed).model == "vgg19"
    assert prefix != "deadbeef"
    mislabelled = tmp_path / "vgg19-deadbeef.pth"
    mislabelled.write_bytes(renamed.read_bytes())
    with pytest.raises(ImpastoError, match="sha256") as info:
        W.load(mislabelled)
    assert str(mislabelled) in str(info.value)


def test_a_name_ending_in_a_date_is_not_read_as_a_hash(tmp_path, vgg19_state):
    dated = save(tmp_path / "vgg19-caffe-20240115.safetensors", vgg19_state)
    assert W.load(dated).model == "vgg19"
    # A user's own file that does end in a wrong hash is told it may be its name, not told to delete it.
    named = save(tmp_path / "vgg19-mine-deadbeef.pth", vgg19_state)
    with pytest.raises(ImpastoError, match="rename the file if '-deadbeef' in its name is not the start of its sha256"):
        W.load(named)


def test_a_weights_file_named_from_home_decides_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save(tmp_path / "mine.pth", random_vgg_features("vgg16", seed=3))
    assert W.load_for(None, "~/mine.pth").model == "vgg16"


@pytest.mark.parametrize(
    "suffix, damage",
    [
        ("pth", "random"),
        ("pth", "truncated"),
        ("pth", "empty"),
        ("safetensors", "random"),
        ("safetensors", "truncated"),
        ("safetensors", "empty"),
    ],
)
def test_corrupt_file_is_a_user_error_not_a_traceback(tmp_path, vgg19_state, suffix, damage):
    path = tmp_path / f"vgg19.{suffix}"
    if damage == "random":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        whole = save(tmp_path / f"whole.{suffix}", vgg19_state).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImpastoError) as info:
        W.load(path)
    assert str(path) in str(info.value)


def test_a_text_file_given_as_weights_is_said_not_to_be_one(tmp_path):
    # torch.load's own complaint about a text file is `KeyError: 101` (the byte 'e').
    path = tmp_path / "notes.txt"
    path.write_text("hello world\n")
    with pytest.raises(ImpastoError, match=r"notes.txt: cannot read weights \(not a PyTorch file\)"):
        W.load(path)
