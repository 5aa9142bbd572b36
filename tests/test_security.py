"""Key placement, key integrity, the derivation and the noise (issues 14 and 18).

Each test here failed on the code before the fix it guards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import smooth_images
from medveil import atomic
from medveil.calibration import calibrate
from medveil.cli import app
from medveil.errors import InvalidKeyError
from medveil.figures import pipeline_figure, stage_figure
from medveil.keys import Calibration, Key, SchemeParams, generate_key
from medveil.obfuscator import Obfuscator
from medveil.stages import NoiseSource

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _squash(text: str) -> str:
    # Rich wraps long lines (and folds long paths) at the terminal width.
    return re.sub(r"\s+", "", text)


# --- item 2: a crash around the rename neither loses the key nor leaves its secret behind ---


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic.atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert synced == ["file", "folder"]


def test_a_keygen_killed_before_the_rename_leaves_no_secret_after_the_next(tmp_path):
    path = tmp_path / "keys" / "site.key"
    child = textwrap.dedent(
        f"""
        import os, signal
        from medveil.keys import generate_key
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = os.link = os.rename = die
        generate_key(preset="svd", size=32, rank=4).save({str(path)!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    leftovers = list(path.parent.glob(".site.key.*.tmp"))
    assert len(leftovers) == 1 and not path.exists()
    assert stat.S_IMODE(leftovers[0].stat().st_mode) == 0o600  # it holds a secret

    key = generate_key(preset="svd", size=32, rank=4)
    key.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["site.key"]
    assert Key.load(path).secret == key.secret


# --- item 3: symbolic links and races cannot put a key where the checks did not look ---


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    (store / ".medveil-output").write_text("medveil store\n")
    return store


def test_a_symlink_cannot_carry_a_key_into_an_output_folder(tmp_path):
    store = _store(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store / "k.key").symlink_to(elsewhere / "k.key")  # dangling
    with pytest.raises(InvalidKeyError, match="symbolic link"):
        generate_key(preset="svd", size=32, rank=4).save(store / "k.key")
    assert (store / "k.key").is_symlink() and not (elsewhere / "k.key").exists()
    assert sorted(p.name for p in store.iterdir()) == [".medveil-output", "k.key"]


def test_a_symlink_pointing_into_an_output_folder_is_refused(tmp_path):
    store = _store(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "site.key").symlink_to(store / "site.key")
    with pytest.raises(InvalidKeyError, match="symbolic link"):
        generate_key(preset="svd", size=32, rank=4).save(keys / "site.key")
    assert not (store / "site.key").exists()


def test_save_never_replaces_a_file_created_after_its_checks(tmp_path, monkeypatch):
    import medveil.keys as keys_module

    path = tmp_path / "site.key"
    check = keys_module.ensure_not_in_output

    def check_then_race(key_path, output_dir=None):
        check(key_path, output_dir)
        path.write_text("another process's key")  # appears between the checks and the write

    monkeypatch.setattr(keys_module, "ensure_not_in_output", check_then_race)
    with pytest.raises(FileExistsError, match="nothing was replaced"):
        generate_key(preset="svd", size=32, rank=4).save(path)
    assert path.read_text() == "another process's key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.key"]


def test_exclusive_atomic_write_refuses_an_existing_name(tmp_path):
    target = tmp_path / "x"
    target.symlink_to(tmp_path / "nowhere")  # even a dangling link counts as taken
    with pytest.raises(FileExistsError):
        atomic.atomic_write_bytes(target, b"new", exclusive=True)
    assert target.is_symlink() and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


# --- item 4: the folders above a key are owner-only and not writable by others ---


def test_missing_key_folders_are_created_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = generate_key(preset="svd", size=32, rank=4).save(tmp_path / "a" / "b" / "c" / "k")
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757])
def test_a_key_is_refused_under_a_folder_others_can_write(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    key = generate_key(preset="svd", size=32, rank=4)
    for path in (shared / "site.key", shared / "mine" / "site.key"):
        with pytest.raises(InvalidKeyError, match=f"{shared}.*mode {mode:04o}.*chmod go-w"):
            key.save(path)
    assert list(shared.iterdir()) == []


def test_a_sticky_shared_folder_is_allowed(tmp_path):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot remove or rename what they do not own
    path = generate_key(preset="svd", size=32, rank=4).save(sticky / "site.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- item 6: derive-v2 keys a cryptographic stream with the whole secret ---


def _spec_normals(secret: bytes, label: str, count: int) -> np.ndarray:
    """medveil-derive-v2 as docs/FORMATS.md states it, written out independently."""
    pairs = (count + 1) // 2
    stream = hashlib.shake_256(b"medveil/derive/v2/" + label.encode() + b"/" + secret)
    words = np.frombuffer(stream.digest(16 * pairs), dtype="<u8")
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(u[0::2]))
    out = np.empty(2 * pairs)
    out[0::2] = radius * np.cos(2 * np.pi * u[1::2])
    out[1::2] = radius * np.sin(2 * np.pi * u[1::2])
    return out[:count]


def test_new_keys_derive_their_matrices_from_shake256_of_the_whole_secret(tmp_path):
    key = generate_key(size=40, rank=4, width=48)
    assert key.derivation == "medveil-derive-v2"
    right = _spec_normals(key.secret, "right/n=40/k=4/m=48/block=16", 4 * 48).reshape(4, 48)
    np.testing.assert_array_equal(key.right_matrix(), right / 2.0)
    q, r = np.linalg.qr(_spec_normals(key.secret, "left/n=40/k=4/m=48/block=16", 1600).reshape(40, 40))
    np.testing.assert_allclose(key.left_matrix(), q * np.sign(np.diag(r)), atol=1e-12)
    # Every one of the 256 bits matters, the last 128 included.
    flipped = bytearray(key.secret)
    flipped[31] ^= 0x01
    other = Key(secret=bytes(flipped), params=key.params, derivation=key.derivation)
    assert not np.isin(other.right_matrix(), key.right_matrix()).any()

    saved = json.loads(key.save(tmp_path / "k.key").read_text())
    assert (saved["version"], saved["derivation"]) == (2, "medveil-derive-v2")


# A key file written by medveil before derive-v2 (version 1, no check value).
V1_KEY_FILE = {
    "format": "medveil-key",
    "secret": bytes(range(32)).hex(),
    "version": 1,
    "derivation": "medveil-derive-v1",
    "params": {
        "preset": "multistage", "size": 40, "rank": 4, "bits": 8, "noise": 0.02,
        "left": "block", "right": "gaussian", "width": 48, "block_size": 16,
        "clip_percentile": 99.9, "solver": "subspace",
    },
    "calibration": {"clip": 3.1, "mean": 0.01, "std": 1.7, "images": 512},
}


def test_a_v1_key_file_still_gives_its_old_matrices_and_fingerprint(tmp_path):
    path = tmp_path / "old.key"
    path.write_text(json.dumps(V1_KEY_FILE, indent=2))
    path.chmod(0o600)
    key = Key.load(path)
    assert key.derivation == "medveil-derive-v1"
    # Values printed by medveil 0.1.0 (commit 975456d) for this file.
    assert key.fingerprint == "53c4d9cef8991392"
    left, right = key.left_matrix(), key.right_matrix()
    np.testing.assert_allclose(
        left[0, :3], [0.1218958841674107, -0.46361134059676606, -0.32689887031096154], atol=1e-12
    )
    np.testing.assert_allclose(
        left[39, 37:], [0.5359324560426043, -0.03896124562892568, -0.2103940414065697], atol=1e-12
    )
    np.testing.assert_array_equal(
        right[0, :3], [0.17720118431132648, 1.0883891151092793, 0.6001940794303354]
    )
    assert float(left.sum()) == pytest.approx(7.711623575833051, abs=1e-10)
    assert float(right.sum()) == pytest.approx(1.2428334435217858, abs=1e-12)
    # Re-saved, it stays a v1 key with the same fingerprint, now with its check value.
    again = Key.load(key.save(tmp_path / "again.key"))
    assert again.derivation == "medveil-derive-v1" and again.fingerprint == key.fingerprint
    assert json.loads((tmp_path / "again.key").read_text())["version"] == 1


# --- item 7: the parameters are bound into the derivation ---


@pytest.mark.parametrize("change", [{"rank": 4}, {"width": 40}, {"block_size": 8}, {"size": 48}])
def test_v2_matrices_share_nothing_across_parameters(change):
    key = generate_key(size=40, rank=8, width=48, left="block", block_size=16)
    other = key.with_params(**change)
    for mine, theirs in ((key.left_matrix(), other.left_matrix()),
                         (key.right_matrix(), other.right_matrix())):
        shared = np.isin(theirs[theirs != 0], mine[mine != 0])
        assert not shared.any(), change
    if "rank" in change:  # under v1, R_R(k=4) was a rescaled slice of R_R(k=8)
        scaled = other.right_matrix() * np.sqrt(4) / np.sqrt(8)
        assert not np.allclose(scaled, key.right_matrix()[:4])


# --- item 8: noise ---


def test_unpinned_noise_is_keyed_by_128_bits_of_os_entropy(monkeypatch):
    import medveil.stages as stages

    draws = iter([(1 << 127) | 5, 5, (1 << 127) | 5])
    asked = []

    def randbits(bits):
        asked.append(bits)
        return next(draws)

    monkeypatch.setattr(stages.secrets, "randbits", randbits)

    def sample():
        return NoiseSource().normal((64,), std=1.0, dtype=torch.float64, device=torch.device("cpu"))

    first, low_only, same = sample(), sample(), sample()
    assert asked == [128, 128, 128]
    assert torch.equal(first, same)  # the generator is a function of the 128 bits ...
    assert not torch.isin(low_only, first).any()  # ... and the top bit changes everything


class _NoiseDraws(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.source.normal((8,), std=1.0, dtype=torch.float64, device=torch.device("cpu"))


def _draw_in_workers(seed):
    loader = torch.utils.data.DataLoader(
        _NoiseDraws(NoiseSource(seed=seed)), batch_size=1, num_workers=2,
        multiprocessing_context="fork",
    )
    return [batch[0] for batch in loader]


def test_dataloader_workers_with_a_pinned_seed_draw_different_noise():
    draws = _draw_in_workers(7)
    # Items 0 and 1 are each the first draw of workers 0 and 1.
    assert not torch.isin(draws[1], draws[0]).any()
    again = _draw_in_workers(7)
    assert all(torch.equal(a, b) for a, b in zip(draws, again))  # still reproducible
    main = NoiseSource(seed=7).normal(
        (8,), std=1.0, dtype=torch.float64, device=torch.device("cpu")
    )
    assert not any(torch.isin(d, main).any() for d in draws)


def test_figures_refuse_pinned_noise(images32):
    key = calibrate(generate_key(size=32, rank=4), images32)
    svd = Obfuscator(generate_key(preset="svd", size=32, rank=4))
    with pytest.raises(ValueError, match="fresh noise"):
        stage_figure(Obfuscator(key, noise_seed=0), images32[0])
    with pytest.raises(ValueError, match="fresh noise"):
        pipeline_figure(images32[:2], ["a", "b"], svd=svd, multistage=Obfuscator(key, noise_seed=0))


def test_show_has_no_way_to_pin_the_noise(tmp_path):
    key = generate_key(preset="svd", size=32, rank=4)
    key.save(tmp_path / "k.key")
    image = tmp_path / "x.png"
    Image.fromarray((smooth_images(1, 32)[0] * 255).astype(np.uint8)).save(image)
    pinned = runner.invoke(
        app, ["show", str(image), "--key", str(tmp_path / "k.key"), "-o", str(tmp_path / "f.png"),
              "--noise-seed", "0"],
    )
    assert pinned.exit_code == 2 and "No such option" in pinned.output
    assert not (tmp_path / "f.png").exists()


# --- issue 14 item 3: key files open to others are refused on load ---


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_open_to_others_is_refused_with_the_fix(tmp_path, mode):
    key = generate_key(preset="svd", size=32, rank=4)
    path = key.save(tmp_path / "site.key")
    path.chmod(mode)
    with pytest.raises(InvalidKeyError) as caught:
        Key.load(path)
    message = str(caught.value)
    assert f"chmod 600 {path}" in message and f"{mode:04o}" in message
    assert "--allow-open-key" in message
    assert Key.load(path, allow_open=True).secret == key.secret


def _dataset(root: Path) -> Path:
    images = smooth_images(4, 32)
    for i, pixels in enumerate(images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "command",
    [
        ["obfuscate", "{data}", "--key", "{key}", "-o", "{tmp}/store", "--device", "cpu"],
        ["show", "{data}/a/1.png", "--key", "{key}", "-o", "{tmp}/fig.png"],
        ["predict", "{tmp}/run", "{data}/a/1.png", "--key", "{key}", "--device", "cpu"],
        ["sweep-rank", "{data}", "--key", "{key}", "-o", "{tmp}/sweep", "--ranks", "2"],
        ["attack", "{data}", "--key", "{key}", "-o", "{tmp}/attack"],
    ],
)
def test_every_command_refuses_an_open_key_file(tmp_path, command):
    data = _dataset(tmp_path / "data")
    key_path = generate_key(preset="svd", size=32, rank=4).save(tmp_path / "keys" / "site.key")
    key_path.chmod(0o644)
    args = [a.format(data=data, key=key_path, tmp=tmp_path) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert _squash(f"chmod 600 {key_path}") in _squash(result.output)
    for name in ("store", "fig.png", "sweep", "attack"):
        assert not (tmp_path / name).exists()


def test_allow_open_key_accepts_a_key_on_read_only_media(tmp_path):
    data = _dataset(tmp_path / "data")
    key_path = generate_key(preset="svd", size=32, rank=4).save(tmp_path / "keys" / "site.key")
    key_path.chmod(0o444)
    args = ["obfuscate", str(data), "--key", str(key_path), "-o", str(tmp_path / "store"),
            "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 2
    result = runner.invoke(app, [*args, "--allow-open-key"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "store" / "manifest.json").is_file()
    shown = runner.invoke(app, ["show", str(data / "a" / "1.png"), "--key", str(key_path), "-o",
                                str(tmp_path / "fig.png"), "--allow-open-key"])
    assert shown.exit_code == 0, shown.output


# --- issue 14 item 4: a damaged key file is detected on load ---


def _tamper(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(secret=("1" if d["secret"][0] != "1" else "2") + d["secret"][1:]),
        lambda d: d["params"].update(rank=5),
        lambda d: d["params"].update(noise=0.0),
        lambda d: d["calibration"].update(clip=d["calibration"]["clip"] * 2),
    ],
    ids=["secret", "rank", "noise", "calibration"],
)
def test_an_altered_key_file_is_reported_as_damaged(tmp_path, images32, edit):
    key = calibrate(generate_key(size=32, rank=4), images32)
    path = _tamper(key.save(tmp_path / "site.key"), edit)
    with pytest.raises(InvalidKeyError, match=f"{path}: the key file is damaged"):
        Key.load(path)


def test_a_v2_key_file_without_its_check_value_is_refused(tmp_path):
    path = _tamper(
        generate_key(preset="svd", size=32, rank=4).save(tmp_path / "site.key"),
        lambda d: d.pop("fingerprint"),
    )
    with pytest.raises(InvalidKeyError, match="missing field.*fingerprint"):
        Key.load(path)


def test_obfuscate_refuses_a_damaged_key(tmp_path):
    data = _dataset(tmp_path / "data")
    key_path = _tamper(
        generate_key(preset="svd", size=32, rank=4).save(tmp_path / "keys" / "site.key"),
        lambda d: d.update(secret="00" * 32),
    )
    result = runner.invoke(
        app, ["obfuscate", str(data), "--key", str(key_path), "-o", str(tmp_path / "store")]
    )
    assert result.exit_code == 2 and "damaged" in result.output
    assert not (tmp_path / "store").exists()


# --- item 11: the key example in docs/FORMATS.md is a loadable key file ---


def test_the_documented_key_example_loads(tmp_path):
    text = (ROOT / "docs" / "FORMATS.md").read_text()
    section = text[text.index("## Key file") :]
    example = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "example.key"
    path.write_text(example)
    path.chmod(0o600)
    key = Key.load(path)
    data = json.loads(example)
    assert key.fingerprint == data["fingerprint"]
    assert key.params == SchemeParams(**data["params"])
    assert key.calibration == Calibration(**data["calibration"])
    assert key.derivation == data["derivation"] == "medveil-derive-v2"


# --- item 5: every folder medveil writes carries the marker, so keys are refused there ---


def test_training_evaluation_and_sweep_folders_are_marked_and_refuse_keys(tmp_path):
    from medveil.outputs import output_kind
    from medveil.training import DataSource, TrainConfig, sweep_rank

    images = smooth_images(24, 32, seed=4)
    labels = np.arange(24) % 2
    plain = DataSource.from_arrays(images, labels, classes=("a", "b"))
    config = TrainConfig(
        model="smallcnn", epochs=1, batch_size=16, input_size=32, device="cpu", patience=None
    )
    key = generate_key(preset="svd", size=32, rank=4)
    sweep = tmp_path / "sweep"
    sweep_rank(plain, ranks=[2], key=key, config=config, out_dir=sweep)
    run = sweep / "rank-002"
    folders = {sweep: "rank-sweep", run: "training-run", run / "evaluation": "evaluation"}
    for folder, kind in folders.items():
        assert output_kind(folder) == kind
        with pytest.raises(InvalidKeyError, match="output folder"):
            key.save(folder / "keys" / "site.key")
        assert not (folder / "keys").exists()


def test_attack_run_folders_are_marked_and_refuse_keys(tmp_path):
    from medveil.outputs import output_kind
    from medveil.privacy import PrivacyConfig, run_privacy

    data = tmp_path / "data"
    for i, image in enumerate(smooth_images(30, 32, seed=5)):
        folder = data / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    key = generate_key(preset="svd", size=32, rank=4)
    config = PrivacyConfig(
        victims=5, public=15, pairs=(5,), threats=("A1",), attacks=("reid",), device="cpu"
    )
    run_privacy(data, key=key, config=config, output=tmp_path / "attack")
    assert output_kind(tmp_path / "attack") == "attack-run"
    with pytest.raises(InvalidKeyError, match="output folder"):
        key.save(tmp_path / "attack" / "site.key")
