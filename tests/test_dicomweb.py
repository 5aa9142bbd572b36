"""Obfuscation straight from a PACS over DICOMweb (issue 17, item 5), against a real server.

Orthanc with its DICOMweb plugin (Debian packages ``orthanc`` and ``orthanc-dicomweb``; ``.ci/run``
installs them) is started on a free loopback port with a JSON config, loaded with DICOMs made
here with pydicom, and stopped. Transient failures come from a small loopback HTTP proxy in
front of it that answers chosen requests with an error or drops the connection: the client's
retries then meet real sockets and real HTTP.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from typer.testing import CliRunner

from conftest import smooth_images
from medveil.cli import app
from medveil.dicomweb import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    USER_VARIABLE,
    DicomWebError,
    DicomWebSource,
    DicomWebUnavailableError,
    RetryPolicy,
)
from medveil.errors import (
    ConfigError,
    DatasetLayoutError,
    ImageLoadError,
    MedveilWarning,
    StoreError,
)
from medveil.keys import generate_key
from medveil.loading import LoadOptions
from medveil.obfuscate import group_hash, obfuscate_dataset
from medveil.store import ObfuscatedStore

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(
    not (ORTHANC.is_file() and PLUGIN.is_file()),
    reason="Orthanc with its DICOMweb plugin is not installed (Debian packages orthanc and "
    "orthanc-dicomweb; .ci/run installs them)",
)
FAST = RetryPolicy(attempts=4, backoff=0.01, max_wait=0.05, timeout=(5.0, 30.0))
SIZE = 32
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (TOKEN_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # never the tester's ~/.netrc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def orthanc(folder: Path, *, users: dict[str, str] | None = None) -> Iterator[str]:
    """A running Orthanc (DICOMweb at /dicom-web/, storage in ``folder``); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "medveil-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": users is not None,
        "RegisteredUsers": users or {},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen(
        [str(ORTHANC), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{url}/system", timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        else:
            raise RuntimeError("Orthanc did not start in 5 s")
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc failed: {(folder / 'orthanc.log').read_text()[-2000:]}")
        yield url
    finally:
        # Killed, not stopped: its storage is thrown away, and a clean stop takes seconds.
        process.kill()
        process.wait()
        log.close()


def make_instance(
    *, patient: str, study: str, series: str, number: int, pixels: np.ndarray, rle: bool = False
) -> bytes:
    """A secondary-capture DICOM (16-bit, 12 bits stored) as file bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", sop
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, study, series
    ds.SeriesNumber, ds.InstanceNumber, ds.Modality = 1, number, "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# Studies: (patient, label, split, instances). P1 has two studies; the last study has no
# PatientID, so its instances are grouped by the study.
STUDIES = [("P1", "tumor", "train", 3), ("P2", "normal", "train", 2), ("P1", "tumor", "test", 2),
           ("P3", "normal", "test", 1), ("", "normal", "train", 2)]


class Pacs:
    """The test archive: the studies' UIDs, their instances' bytes in PACS order, the labels."""

    def __init__(self, url: str, users: tuple[str, str] | None = None) -> None:
        self.url = url
        self.studies: list[str] = []
        self.files: list[tuple[str, bytes]] = []  # (study, bytes) in PACS order
        images = smooth_images(sum(s[3] for s in STUDIES), 40, seed=3)
        k = 0
        for s, (patient, _, _, count) in enumerate(STUDIES):
            study, series = generate_uid(), generate_uid()
            self.studies.append(study)
            for number in range(1, count + 1):
                data = make_instance(
                    patient=patient, study=study, series=series, number=number,
                    pixels=images[k] * 4000 + 50, rle=(s == 0 and number == 2),
                )
                k += 1
                self.files.append((study, data))
                answer = requests.post(f"{url}/instances", data=data, auth=users, timeout=10)
                assert answer.status_code == 200, answer.text

    def labels(self, path: Path, *, extra: list[str] = ()) -> Path:
        rows = ["StudyInstanceUID,label,split"] + [
            f"{uid},{label},{split}" for uid, (_, label, split, _) in zip(self.studies, STUDIES)
        ]
        path.write_text("\n".join(rows + list(extra)) + "\n")
        return path


    def as_folder(self, root: Path) -> tuple[Path, Path]:
        """The same DICOMs as files, and a labels CSV listing them in the same order with the
        same labels and splits."""
        (root / "folder").mkdir()
        rows = ["path,label,split"]
        for i, (study, data) in enumerate(self.files):
            (root / "folder" / f"{i:02d}.dcm").write_bytes(data)
            _, label, split, _ = STUDIES[self.studies.index(study)]
            rows.append(f"{i:02d}.dcm,{label},{split}")
        (root / "files.csv").write_text("\n".join(rows) + "\n")
        return root / "folder", root / "files.csv"


@pytest.fixture()
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    # A server per test: a run that a test stops on purpose may leave a request in flight, and
    # the next test must not meet the server in whatever state that request left it.
    with orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield Pacs(url)


@pytest.fixture(scope="module")
def key():
    return generate_key(preset="svd", size=SIZE, rank=8)


def use_netrc(monkeypatch: pytest.MonkeyPatch, folder: Path, *, host: str) -> None:
    """Point NETRC at an owner-only netrc file holding alice's password for ``host``."""
    netrc = folder / "netrc"
    netrc.write_text(f"machine {host} login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


def dicomweb(url: str) -> str:
    return f"{url}/dicom-web"


def read_store(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    store = ObfuscatedStore(path)
    out = {}
    for name in store.splits:
        split = store.split(name)
        out[name] = (split.arrays(list(range(len(split)))), split.labels, store.groups(name))
    return out


def partition(groups: np.ndarray) -> list[int]:
    """Group values as first-seen indices: equal partitions give equal lists."""
    first: dict[int, int] = {}
    return [first.setdefault(int(g), len(first)) for g in groups]


# --- the store from a PACS is the store from the same files -------------------------------------


def test_pacs_store_equals_folder_store(tmp_path: Path, pacs: Pacs, key) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    result = obfuscate_dataset(
        dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "pacs", device="cpu",
        files_per_shard=3, retry=FAST,
    )
    folder, files = pacs.as_folder(tmp_path)
    obfuscate_dataset(
        folder, labels=files, key=key, output=tmp_path / "files", device="cpu", files_per_shard=3,
    )
    from_pacs, from_files = read_store(tmp_path / "pacs"), read_store(tmp_path / "files")
    assert list(from_pacs) == list(from_files) == ["train", "test"]
    for split in from_pacs:
        images, labels_, _ = from_pacs[split]
        assert images.tobytes() == from_files[split][0].tobytes()  # byte for byte
        assert labels_.tolist() == from_files[split][1].tolist()
    # Groups by patient alike; the study without a PatientID is one group from the PACS, while
    # in a folder each of its files is its own.
    assert partition(from_pacs["train"][2]) == [0, 0, 0, 1, 1, 2, 2]
    assert partition(from_files["train"][2]) == [0, 0, 0, 1, 1, 2, 3]
    assert partition(from_pacs["test"][2]) == partition(from_files["test"][2]) == [0, 0, 1]
    # Classes sorted, labels and splits from the CSV rows (train: studies 0, 1, 4; test: 2, 3).
    store = ObfuscatedStore(tmp_path / "pacs")
    assert store.classes == ("normal", "tumor")
    assert from_pacs["train"][1].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert from_pacs["test"][1].tolist() == [1, 1, 0]
    assert result.images == {"train": 7, "test": 3} and result.files == 10
    manifest = store.manifest
    assert manifest["layout"] == "dicomweb"
    assert manifest["plan"]["source"] == dicomweb(pacs.url)


def test_groups_are_patients_then_studies(tmp_path: Path, pacs: Pacs, key) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    result = obfuscate_dataset(
        dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "store", device="cpu",
        retry=FAST,
    )
    store = ObfuscatedStore(tmp_path / "store")
    listing = store.manifest["plan"]["files"]
    train, test = store.groups("train").tolist(), store.groups("test").tolist()
    p1, p2, p3 = (group_hash(key, listing, f"patient:{p}") for p in ("P1", "P2", "P3"))
    no_patient = group_hash(key, listing, "study:" + pacs.studies[4])
    # Train: P1's 3 images, P2's 2, then the study without a PatientID (one group, its study).
    assert train == [p1] * 3 + [p2] * 2 + [no_patient] * 2
    # Test: P1's second study joins P1's group; P3.
    assert test == [p1] * 2 + [p3]
    assert result.groups == 4
    # No PatientID or UID is stored.
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for uid in pacs.studies:
                assert uid.encode() not in data


# --- resumption and transient failures ----------------------------------------------------------


# Headers about one connection (RFC 9110 7.6.1), which a proxy must not pass on.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


class FaultyProxy:
    """A loopback HTTP proxy to ``target`` that answers WADO-RS retrievals of instances as
    ``faults`` says, one per request ("503", "500", ...; "drop": close the connection without an
    answer; "pass": forward it), then forwards them all; ``down`` makes every retrieval answer 503."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://")
        self.faults: list[str] = []
        self.down = False
        self.retrievals: list[str] = []  # instance UIDs whose retrieval was forwarded
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 -- the http.server API
                retrieval = "/instances/" in self.path
                fault = "pass"
                if retrieval and (proxy.down or proxy.faults):
                    fault = "503" if proxy.down else proxy.faults.pop(0)
                if fault != "pass":
                    proxy.failed += 1
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(int(fault))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if retrieval:
                    proxy.retrievals.append(self.path.rstrip("/").rsplit("/", 1)[-1])
                connection = http.client.HTTPConnection(proxy.target, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request("GET", self.path, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                # This proxy closes every connection after one answer, so it must say so: passing
                # on Orthanc's "Keep-Alive" made the client reuse a closed connection (a flake).
                self.send_header("Connection", "close")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                connection.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads, self.server.block_on_close = True, False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def proxy(pacs: Pacs) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(pacs.url)
    yield proxy
    proxy.close()


def test_transient_errors_are_retried(tmp_path: Path, pacs: Pacs, proxy: FaultyProxy, key) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    clean = obfuscate_dataset(
        dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "clean", device="cpu",
        retry=FAST,
    )
    # The first instance fails 3 times of the 4 allowed, the second twice.
    proxy.faults = ["503", "drop", "500", "pass", "502", "drop"]
    result = obfuscate_dataset(
        dicomweb(proxy.url), labels=labels, key=key, output=tmp_path / "retried", device="cpu",
        retry=FAST, workers=1,
    )
    assert proxy.failed == 5 and proxy.faults == []
    assert len(proxy.retrievals) == 10  # every instance once, after its failures
    assert result.images == clean.images
    for split, (images, labels_, _) in read_store(tmp_path / "retried").items():
        assert images.tobytes() == read_store(tmp_path / "clean")[split][0].tobytes()
        assert labels_.tolist() == read_store(tmp_path / "clean")[split][1].tolist()


def test_dropped_connections_are_retried_then_named(
    tmp_path: Path, pacs: Pacs, proxy: FaultyProxy, key
) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    proxy.faults = ["drop"] * 4
    with pytest.raises(
        DicomWebUnavailableError,
        match=r"retrieving instance [0-9.]+ of study [0-9.]+ \(row 2\) failed 4 time\(s\), last "
        r"with Remote end closed connection without response; the server may be down",
    ):
        obfuscate_dataset(
            dicomweb(proxy.url), labels=labels, key=key, output=tmp_path / "s", device="cpu",
            retry=FAST, workers=1,
        )
    assert proxy.failed == 4 and proxy.retrievals == []


def test_a_server_that_stays_down_stops_the_run_and_a_rerun_resumes(
    tmp_path: Path, pacs: Pacs, proxy: FaultyProxy, key
) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    url, store = dicomweb(proxy.url), tmp_path / "store"
    # The PACS goes down after the first shard (3 instances): 4 tries, then the run stops.
    proxy.faults = []
    seen = []

    def progress(count: int) -> None:
        seen.append(count)
        proxy.down = True

    with pytest.raises(DicomWebUnavailableError, match=r"failed 4 time\(s\), last with HTTP 503"):
        obfuscate_dataset(
            url, labels=labels, key=key, output=store, device="cpu", files_per_shard=3,
            retry=FAST, workers=1, progress=progress,
        )
    assert seen == [3] and proxy.failed == 4 and len(proxy.retrievals) == 3
    assert not (store / "manifest.json").exists()
    # Back up: the rerun retrieves only the 7 instances of the unfinished shards.
    proxy.down, proxy.retrievals = False, []
    result = obfuscate_dataset(
        url, labels=labels, key=key, output=store, device="cpu", files_per_shard=3,
        retry=FAST, workers=1,
    )
    assert result.resumed_shards == 1 and len(proxy.retrievals) == 7
    obfuscate_dataset(
        dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "whole", device="cpu",
        files_per_shard=3, retry=FAST,
    )
    resumed, whole = read_store(store), read_store(tmp_path / "whole")
    for split in whole:
        assert resumed[split][0].tobytes() == whole[split][0].tobytes()
        assert resumed[split][1].tolist() == whole[split][1].tolist()
    # A third run has nothing to do.
    assert obfuscate_dataset(
        url, labels=labels, key=key, output=store, device="cpu", files_per_shard=3, retry=FAST,
    ).already_complete


# --- the three errors ---------------------------------------------------------------------------


def test_wrong_url_is_a_clear_error(tmp_path: Path, pacs: Pacs, key) -> None:
    labels = pacs.labels(tmp_path / "studies.csv")
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(DicomWebError, match=r"cannot connect \(Connection refused\); check the host"):
        obfuscate_dataset(closed, labels=labels, key=key, output=tmp_path / "a", retry=FAST)
    with pytest.raises(DicomWebError, match=r"not a DICOMweb service \(HTTP 404 Not Found"):
        obfuscate_dataset(
            f"{pacs.url}/wado", labels=labels, key=key, output=tmp_path / "b", retry=FAST
        )
    # The server's root: Orthanc's own REST API, which refuses a QIDO-RS query.
    with pytest.raises(DicomWebError, match=r"not a DICOMweb service \(HTTP 400 Bad Request"):
        obfuscate_dataset(pacs.url, labels=labels, key=key, output=tmp_path / "b", retry=FAST)
    # A web page where the DICOMweb root should be.
    class Page(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 -- the http.server API
            body = b"<html><body>Hospital intranet</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(
            DicomWebError, match=r"not a DICOMweb service \(its answer to a QIDO-RS search of "
            r"studies is not DICOM JSON\)",
        ):
            obfuscate_dataset(
                f"http://127.0.0.1:{site.server_address[1]}/portal", labels=labels, key=key,
                output=tmp_path / "b", retry=FAST,
            )
    finally:
        site.shutdown()
        site.server_close()
    with pytest.raises(DicomWebError, match=r"holds a user name or password") as caught:
        obfuscate_dataset(
            f"http://alice:s3cret@127.0.0.1:{free_port()}/dicom-web", labels=labels, key=key,
            output=tmp_path / "c", retry=FAST,
        )
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"a DICOMweb source needs --labels STUDIES.csv"):
        obfuscate_dataset(dicomweb(pacs.url), key=key, output=tmp_path / "d", retry=FAST)
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_unknown_study_names_the_uid_and_the_row(tmp_path: Path, pacs: Pacs, key) -> None:
    missing = "1.2.826.0.1.3680043.8.498.1"
    labels = pacs.labels(tmp_path / "studies.csv", extra=[f"{missing},tumor,train"])
    with pytest.raises(
        DicomWebError,
        match=rf"studies.csv, row 7: study {missing} is not on the server "
        rf"{dicomweb(pacs.url)} \(a QIDO-RS search finds no instance of it\)",
    ):
        obfuscate_dataset(
            dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "s", retry=FAST
        )
    labels = pacs.labels(tmp_path / "bad.csv", extra=["1.2.x,tumor,train"])
    with pytest.raises(DatasetLayoutError, match=r"bad.csv, row 7: 1.2.x is not a StudyInstanceUID"):
        obfuscate_dataset(
            dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "s", retry=FAST
        )
    labels = pacs.labels(tmp_path / "twice.csv", extra=[f"{pacs.studies[0]},normal,test"])
    with pytest.raises(DatasetLayoutError, match=r"twice.csv, row 7: .* is listed twice \(also in row 2\)"):
        obfuscate_dataset(
            dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "s", retry=FAST
        )
    assert not (tmp_path / "s").exists()


def test_login_is_refused_then_accepted_from_the_environment_or_netrc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key
) -> None:
    with orthanc(tmp_path / "secure", users={"alice": "s3cret"}) as url:
        pacs = Pacs(url, users=("alice", "s3cret"))
        labels = pacs.labels(tmp_path / "studies.csv")
        run = lambda out: obfuscate_dataset(  # noqa: E731
            dicomweb(url), labels=labels, key=key, output=tmp_path / out, device="cpu",
            retry=FAST,
        )
        with pytest.raises(
            DicomWebError,
            match=r"refused the login \(HTTP 401 Unauthorized; no credentials were given\); set "
            r"MEDVEIL_DICOMWEB_USER and MEDVEIL_DICOMWEB_PASSWORD",
        ):
            run("none")
        monkeypatch.setenv(USER_VARIABLE, "alice")
        monkeypatch.setenv(PASSWORD_VARIABLE, "wrong")
        with pytest.raises(DicomWebError, match=r"HTTP 401 Unauthorized; the credentials from"):
            run("wrong")
        monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
        assert run("env").images == {"train": 7, "test": 3}
        monkeypatch.delenv(USER_VARIABLE)
        monkeypatch.delenv(PASSWORD_VARIABLE)
        use_netrc(monkeypatch, tmp_path, host="127.0.0.1")
        assert run("from-netrc").images == {"train": 7, "test": 3}
        for store in ("env", "from-netrc"):
            for path in (tmp_path / store).rglob("*"):
                if path.is_file():
                    assert b"s3cret" not in path.read_bytes() and b"alice" not in path.read_bytes()
        assert not (tmp_path / "none").exists() and not (tmp_path / "wrong").exists()


# --- the command line ---------------------------------------------------------------------------


def test_cli_reads_a_pacs_and_writes_only_the_store(
    tmp_path: Path, pacs: Pacs, key, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    key_file = key.save(secrets / "site.key")
    labels = pacs.labels(tmp_path / "studies.csv")
    work, scratch = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(scratch))
    before = {p for p in tmp_path.rglob("*")}
    result = runner.invoke(app, [
        "obfuscate", dicomweb(pacs.url) + "/", "--labels", str(labels), "--key", str(key_file),
        "-o", "store", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "10 images (train: 7, test: 3) from 10 instances -> store" in result.output
    # The only new files are the store's: no plaintext pixels anywhere else.
    new = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert new and all(p.is_relative_to(work / "store") for p in new)
    assert not any(scratch.iterdir())
    assert ObfuscatedStore(work / "store").manifest["plan"]["source"] == dicomweb(pacs.url)
    # An unknown study: exit code 2, the message names the row and the UID.
    bad = pacs.labels(tmp_path / "bad.csv", extra=["1.2.3.4,tumor,train"])
    result = runner.invoke(app, [
        "obfuscate", dicomweb(pacs.url), "--labels", str(bad), "--key", str(key_file),
        "-o", "other",
    ])
    assert result.exit_code == 2
    assert "bad.csv, row 7: study 1.2.3.4 is not on the server" in result.output


def test_cli_keygen_calibrates_on_a_pacs(tmp_path: Path, pacs: Pacs) -> None:
    """The quantizer range depends only on the images (not the secret): the same as from the
    same files in a folder, drawn in the same order."""
    from medveil.calibration import calibrate, load_calibration_images
    from medveil.keys import Key
    from medveil.loading import LoadOptions

    labels = pacs.labels(tmp_path / "studies.csv")
    result = runner.invoke(app, [
        "keygen", "--size", str(SIZE), "--rank", "8", "--calibrate", dicomweb(pacs.url),
        "--labels", str(labels), "--calibration-images", "6", "-o", str(tmp_path / "k.key"),
    ])
    assert result.exit_code == 0, result.output
    key = Key.load(tmp_path / "k.key")
    folder, files = pacs.as_folder(tmp_path)
    images = load_calibration_images(
        folder, count=6, options=LoadOptions(size=SIZE), labels=files
    )
    expected = calibrate(generate_key(size=SIZE, rank=8), images).calibration
    assert key.calibration.images == 6 and key.calibration.clip == expected.clip


def test_credentials_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_VARIABLE, "alice")
    with pytest.raises(DicomWebError, match="MEDVEIL_DICOMWEB_USER is set but MEDVEIL_DICOMWEB_PASSWORD is not"):
        DicomWebSource("http://127.0.0.1:1/dicom-web")
    monkeypatch.setenv(TOKEN_VARIABLE, "t0ken")
    with pytest.raises(DicomWebError, match="both MEDVEIL_DICOMWEB_TOKEN and"):
        DicomWebSource("http://127.0.0.1:1/dicom-web")


def test_retry_policy_waits_grow_and_honour_retry_after() -> None:
    policy = RetryPolicy(backoff=1.0, max_wait=30.0)
    assert [policy.wait(n) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert policy.wait(1, "12") == 12.0 and policy.wait(1, "120") == 30.0
    assert policy.wait(3, "garbage") == 4.0
    with pytest.raises(ValueError, match="attempts must be a positive int"):
        RetryPolicy(attempts=0)


def test_pydicom_reads_what_orthanc_stores(pacs: Pacs) -> None:
    # The compressed instance comes back compressed (transfer syntax "*"), as stored.
    with DicomWebSource(dicomweb(pacs.url), retry=FAST) as source:
        client = source._client()
        study, data = pacs.files[1]
        stored = pydicom.dcmread(io.BytesIO(data))
        got = client.retrieve_instance(study, stored.SeriesInstanceUID, stored.SOPInstanceUID)
    assert got.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(got.pixel_array, stored.pixel_array)



def test_skipped_instances_name_their_labels_row(tmp_path: Path, pacs: Pacs, key) -> None:
    # A 16x16 instance in the second study (labels row 3), refused by --min-size 32.
    study, series = pacs.studies[1], generate_uid()
    tiny = make_instance(
        patient="P2", study=study, series=series, number=9, pixels=np.full((16, 16), 900) +
        np.arange(16),
    )
    assert requests.post(f"{pacs.url}/instances", data=tiny, timeout=10).status_code == 200
    labels = pacs.labels(tmp_path / "studies.csv")
    options = LoadOptions(size=SIZE, min_size=SIZE)
    result = obfuscate_dataset(
        dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "store", device="cpu",
        options=options, skip_bad=True, retry=FAST,
    )
    [skipped] = result.skipped
    assert skipped.path.startswith(f"{study}/{series}/") and "(study of labels row 3)" in (
        skipped.problem
    )
    assert "from 11 instances" in result.summary()
    assert "1 bad instance(s) skipped" in result.summary()
    # Without --skip-bad the run stops, and the error names the row too.
    with pytest.raises(ImageLoadError, match=r"\(study of labels row 3\)"):
        obfuscate_dataset(
            dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "strict",
            device="cpu", options=options, retry=FAST,
        )
    # Every instance refused: the error says instances, not files.
    with pytest.raises(StoreError, match=r"no image could be loaded \(all instances were bad\)"):
        obfuscate_dataset(
            dicomweb(pacs.url), labels=labels, key=key, output=tmp_path / "none", device="cpu",
            options=LoadOptions(size=SIZE, min_size=64), skip_bad=True, retry=FAST,
        )


def test_credentials_over_plain_http_to_another_host_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remote = "http://pacs.example.org/dicom-web"
    monkeypatch.setenv(USER_VARIABLE, "alice")
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
    with pytest.warns(MedveilWarning, match=r"^http://pacs.example.org/dicom-web: the credentials"):
        DicomWebSource(remote).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # https, or this machine: nothing to warn about
        DicomWebSource("https://pacs.example.org/dicom-web").close()
        DicomWebSource("http://127.0.0.1:8042/dicom-web").close()
    # Credentials from a netrc file count as much as the environment's.
    monkeypatch.delenv(USER_VARIABLE)
    monkeypatch.delenv(PASSWORD_VARIABLE)
    use_netrc(monkeypatch, tmp_path, host="pacs.example.org")
    with pytest.warns(MedveilWarning, match="unencrypted"):
        DicomWebSource(remote).close()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no credentials at all
        DicomWebSource(remote).close()
    # The command line says it as a warning line, then goes on (here to a labels error, which
    # stops it before any request).
    monkeypatch.setenv(USER_VARIABLE, "alice")
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
    labels = tmp_path / "studies.csv"
    labels.write_text("StudyInstanceUID,label\n1.2.x,tumor\n")
    result = runner.invoke(app, [
        "keygen", "-o", str(tmp_path / "keys" / "k.key"), "--calibrate", remote,
        "--labels", str(labels),
    ])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "warning: http://pacs.example.org/dicom-web: the credentials will cross the network "
        "unencrypted (http://); use the server's https:// URL"
    )
    assert "1.2.x is not a StudyInstanceUID" in result.output and "s3cret" not in result.output
