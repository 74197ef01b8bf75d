"""Downloader and importer (bistable.data.fetch), against a local HTTP server on 127.0.0.1."""

import argparse
import gzip
import hashlib
import http.server
import io
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from bistable.data import commands, fetch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes), honouring ``Range: bytes=N-`` unless
    ``server.ranges`` is False, and closing the connection after ``server.cut`` bytes when set
    (the full length announced); records each request's path and Range header."""

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and srv.ranges else 0
        if start >= len(data) and rng:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:start + srv.cut] if srv.cut else data[start:])
        self.close_connection = bool(srv.cut)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.ranges, srv.cut = {}, [], True, None
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = bytes(range(256)) * 400  # 100 kB


def test_download_verifies_and_renames(server, tmp_path):
    server.files["f.bin"] = PAYLOAD
    out = fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    server.files["f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:30_000])
    fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.log == [("/f.bin", "bytes=30000-")]


def test_a_download_cut_short_keeps_its_part_for_the_next_call(server, tmp_path):
    """A server that closes the connection early: no md5 check of half a file (which removed
    the part), an OSError saying so, and the next call resumes where it stopped."""
    server.files["f.bin"], server.cut = PAYLOAD, 30_000
    with pytest.raises(OSError, match=r"f.bin: the connection closed after 30000 of 102400 "
                                      r"bytes; run again to resume"):
        fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin.part").read_bytes() == PAYLOAD[:30_000]
    assert not (tmp_path / "f.bin").exists()
    server.cut = None
    fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.log == [("/f.bin", None), ("/f.bin", "bytes=30000-")]


def test_fetch_into_a_folder_it_cannot_write_says_so(tmp_path, tiny, monkeypatch):
    dest = tmp_path / "tiny"
    dest.mkdir()
    monkeypatch.setattr(fetch.os, "access", lambda path, mode: False)  # root writes anywhere
    with pytest.raises(ValueError, match=rf"data folder {dest} is not writable \(the dataset "
                                         r"there is missing or incomplete\)"):
        fetch.fetch("tiny", dest, mirrors=[closed_port_url()], progress=False)
    for k, v in tiny.items():   # a complete read-only copy is fine
        (dest / (k + ".gz")).write_bytes(gzip.compress(v))
    assert fetch.fetch("tiny", dest, mirrors=[closed_port_url()], progress=False) == dest


def test_a_second_fetch_of_a_folder_waits_for_the_first(server, tmp_path, tiny):
    """Two fetches of one folder shared a .part and both failed; the second now waits for the
    first's lock, then finds the files verified."""
    server.files.update({k + ".gz": gzip.compress(v) for k, v in tiny.items()})
    dest = tmp_path / "tiny"
    dest.mkdir()
    done = []
    with fetch._writing(dest):   # the first fetch, filling the folder
        second = threading.Thread(target=lambda: done.append(
            fetch.fetch("tiny", dest, mirrors=[server.url], progress=False)))
        second.start()
        second.join(0.5)
        assert second.is_alive() and server.log == []       # waiting, not downloading
        for k, v in tiny.items():
            (dest / (k + ".gz")).write_bytes(gzip.compress(v))
    second.join(10)
    assert done == [dest] and server.log == []               # found them verified


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    server.files["f.bin"], server.ranges = PAYLOAD, False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_of_complete_partial_file(server, tmp_path):
    server.files["f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)  # the server answers 416
    fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_bad_checksum_leaves_nothing(server, tmp_path):
    server.files["f.bin"] = PAYLOAD[:-1] + b"X"
    with pytest.raises(ValueError, match="f.bin: md5 .* published"):
        fetch.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_gz_download_is_checked_against_raw_md5(server, tmp_path):
    server.files["f.gz"] = gzip.compress(PAYLOAD)
    fetch.download(server.url + "f.gz", tmp_path / "f.gz", md5(PAYLOAD), progress=False)
    assert gzip.decompress((tmp_path / "f.gz").read_bytes()) == PAYLOAD


@pytest.mark.parametrize("served", [b"<html>moved</html>", gzip.compress(PAYLOAD)[:-20]],
                         ids=["not-gzip", "truncated"])
def test_bad_gzip_is_value_error_and_leaves_no_part(server, tmp_path, served):
    server.files["f.gz"] = served
    with pytest.raises(ValueError, match="f.gz: not valid gzip data"):
        fetch.download(server.url + "f.gz", tmp_path / "f.gz", md5(PAYLOAD), progress=False)
    assert list(tmp_path.iterdir()) == []  # no .part left to be resumed
    server.files["f.gz"] = gzip.compress(PAYLOAD)
    fetch.download(server.url + "f.gz", tmp_path / "f.gz", md5(PAYLOAD), progress=False)
    assert gzip.decompress((tmp_path / "f.gz").read_bytes()) == PAYLOAD


@pytest.fixture
def tiny(monkeypatch):
    """A registered dataset 'tiny' of two gzipped files, checked by raw md5."""
    raw = {"a-ubyte": b"alpha" * 100, "b-ubyte": b"beta" * 100}
    spec = fetch.Spec(tuple(fetch.Remote(k + ".gz", md5(v)) for k, v in raw.items()),
                      ("http://mirror.invalid/",))
    monkeypatch.setitem(fetch.DATASETS, "tiny", spec)
    return raw


def test_fetch_downloads_then_keeps_verified_files(server, tmp_path, tiny):
    server.files.update({k + ".gz": gzip.compress(v) for k, v in tiny.items()})
    mirrors = [closed_port_url(), server.url]  # the first mirror is down: fall through
    dest = fetch.fetch("tiny", tmp_path, mirrors=mirrors, progress=False, timeout=5)
    assert dest == tmp_path / "tiny"  # a root gets the dataset's own folder
    assert {p.name for p in dest.iterdir()} == {"a-ubyte.gz", "b-ubyte.gz"}
    n = len(server.log)
    assert fetch.fetch("tiny", tmp_path, mirrors=mirrors, progress=False) == dest
    assert fetch.fetch("tiny", dest, mirrors=mirrors, progress=False) == dest
    assert len(server.log) == n  # nothing downloaded again


def test_fetch_keeps_datasets_with_the_same_file_names_apart(tmp_path, tiny, monkeypatch):
    other = {k: v.upper() for k, v in tiny.items()}  # same names, other content
    monkeypatch.setitem(fetch.DATASETS, "tiny2", fetch.Spec(
        tuple(fetch.Remote(k + ".gz", md5(v)) for k, v in other.items()), ("http://x.invalid/",)))
    for name, files in (("tiny", tiny), ("tiny2", other)):
        src = tmp_path / f"src-{name}"
        src.mkdir()
        for k, v in files.items():
            (src / k).write_bytes(v)
        fetch.fetch(name, tmp_path / "root", from_dir=src)
    assert (tmp_path / "root" / "tiny" / "a-ubyte").read_bytes() == tiny["a-ubyte"]
    assert (tmp_path / "root" / "tiny2" / "a-ubyte").read_bytes() == other["a-ubyte"]


def test_fetch_removes_a_corrupt_copy_that_would_shadow_the_good_one(tmp_path, tiny):
    dest = tmp_path / "tiny"
    dest.mkdir()
    for k, v in tiny.items():
        (dest / (k + ".gz")).write_bytes(gzip.compress(v))
    (dest / "a-ubyte").write_bytes(b"stale")  # the raw form, read before the .gz
    with pytest.warns(UserWarning, match=r"a-ubyte: md5 does not match the published .*; removed"):
        assert fetch.fetch("tiny", dest, mirrors=[closed_port_url()], progress=False) == dest
    assert not (dest / "a-ubyte").exists() and (dest / "a-ubyte.gz").exists()


def test_fetch_keeps_a_folder_that_already_holds_the_files(tmp_path, tiny):
    """A data folder of another name that holds the dataset is used as it is (no subfolder, no
    download)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for k, v in tiny.items():
        (mine / (k + ".gz")).write_bytes(gzip.compress(v))
    assert fetch.fetch("tiny", mine, mirrors=[closed_port_url()], progress=False) == mine
    assert sorted(p.name for p in mine.iterdir()) == ["a-ubyte.gz", "b-ubyte.gz"]


def test_fetch_leaves_another_datasets_files_alone(tmp_path, tiny, monkeypatch):
    """A flat folder of one dataset (MNIST, say) is not taken for another with the same file
    names (Fashion-MNIST): their files were once deleted there as corrupt copies."""
    other = {k: v.upper() for k, v in tiny.items()}
    monkeypatch.setitem(fetch.DATASETS, "tiny2", fetch.Spec(
        tuple(fetch.Remote(k + ".gz", md5(v)) for k, v in other.items()), ("http://x.invalid/",)))
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, v in tiny.items():
        (flat / (k + ".gz")).write_bytes(gzip.compress(v))
    with pytest.raises(FileNotFoundError, match="tiny2"):  # offline
        fetch.fetch("tiny2", flat, mirrors=[closed_port_url()], progress=False)
    src = tmp_path / "src"
    src.mkdir()
    for k, v in other.items():
        (src / k).write_bytes(v)
    assert fetch.fetch("tiny2", flat, from_dir=src) == flat / "tiny2"
    assert sorted(p.name for p in flat.iterdir()) == ["a-ubyte.gz", "b-ubyte.gz", "tiny2"]
    for k, v in tiny.items():
        assert gzip.decompress((flat / (k + ".gz")).read_bytes()) == v


def test_gzip_data_under_the_raw_name_is_verified_by_content(tmp_path, tiny):
    """The loaders read gzip data by its magic whatever the name; the checksum does too (such a
    copy was deleted as corrupt)."""
    dest = tmp_path / "tiny"
    dest.mkdir()
    for k, v in tiny.items():
        (dest / k).write_bytes(gzip.compress(v))
    assert fetch.fetch("tiny", dest, mirrors=[closed_port_url()], progress=False) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["a-ubyte", "b-ubyte"]


def test_fetch_downloads_again_a_truncated_gz_copy(server, tmp_path, tiny):
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "a-ubyte.gz").write_bytes(gzip.compress(tiny["a-ubyte"])[:-20])
    (dest / "b-ubyte.gz").write_bytes(gzip.compress(tiny["b-ubyte"]))
    server.files.update({k + ".gz": gzip.compress(v) for k, v in tiny.items()})
    with pytest.warns(UserWarning, match=r"a-ubyte.gz: md5 does not match .*; removed"):
        assert fetch.fetch("tiny", dest, mirrors=[server.url], progress=False) == dest
    assert gzip.decompress((dest / "a-ubyte.gz").read_bytes()) == tiny["a-ubyte"]
    assert server.log == [("/a-ubyte.gz", None)]


def test_an_import_cut_short_leaves_nothing_under_the_final_name(tmp_path, tiny, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for k, v in tiny.items():
        (src / k).write_bytes(v)
    copyfile = shutil.copyfile

    def half(a, b, **kw):
        Path(b).write_bytes(Path(a).read_bytes()[:10])
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", half)
    with pytest.raises(OSError, match="disk full"):
        fetch.fetch("tiny", tmp_path / "tiny", from_dir=src)
    assert list((tmp_path / "tiny").iterdir()) == []           # no half file, no temporary one
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    dest = fetch.fetch("tiny", tmp_path / "tiny", from_dir=src)
    assert (dest / "a-ubyte").read_bytes() == tiny["a-ubyte"]


def test_a_copy_a_killed_fetch_left_is_removed_by_the_next(tmp_path, tiny):
    """``kill -9`` during an import leaves its temporary copy; the next fetch, which imports
    the file again, removes it. Another process's that still runs is left alone."""
    src = tmp_path / "src"
    src.mkdir()
    for k, v in tiny.items():
        (src / k).write_bytes(v)
    dest = fetch.fetch("tiny", tmp_path / "tiny", from_dir=src)
    (dest / "a-ubyte").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    orphan, live = dest / f".a-ubyte.{dead.pid}.tmp", dest / ".a-ubyte.1.tmp"  # 1: init
    for tmp in (orphan, live):
        tmp.write_bytes(tiny["a-ubyte"][:10])
    fetch.fetch("tiny", tmp_path / "tiny", from_dir=src)
    assert (dest / "a-ubyte").read_bytes() == tiny["a-ubyte"]
    assert not orphan.exists() and live.exists()


def test_fetch_offline_names_files_and_folder(tmp_path, tiny):
    with pytest.raises(FileNotFoundError) as err:
        fetch.fetch("tiny", tmp_path / "d", mirrors=[closed_port_url()], progress=False)
    msg = str(err.value)
    assert "a-ubyte.gz, b-ubyte.gz" in msg and str(tmp_path / "d") in msg and "--from" in msg
    assert "\n" not in msg


def test_fetch_bad_checksum_everywhere_is_value_error(server, tmp_path, tiny):
    server.files.update({k + ".gz": gzip.compress(v + b"!") for k, v in tiny.items()})
    with pytest.raises(ValueError, match="md5"):
        fetch.fetch("tiny", tmp_path, mirrors=[server.url], progress=False)


def test_fetch_from_a_folder_of_another_dataset_says_whose_files_it_holds(tmp_path, tiny,
                                                                          monkeypatch):
    other = {k: v.upper() for k, v in tiny.items()}  # same names, other content
    monkeypatch.setitem(fetch.DATASETS, "tiny2", fetch.Spec(
        tuple(fetch.Remote(k + ".gz", md5(v)) for k, v in other.items()), ("http://x.invalid/",)))
    src = tmp_path / "src"
    src.mkdir()
    for k, v in tiny.items():
        (src / k).write_bytes(v)
    with pytest.raises(ValueError, match=rf"a-ubyte: md5 {md5(tiny['a-ubyte'])} does not match "
                                         rf"the published {md5(other['a-ubyte'])}: this is "
                                         r"tiny's a-ubyte, not tiny2's$"):
        fetch.fetch("tiny2", tmp_path / "dest", from_dir=src)
    (src / "a-ubyte").write_bytes(other["b-ubyte"])  # the right dataset, the wrong file
    with pytest.raises(ValueError, match=r"this is tiny2's b-ubyte, not tiny2's a-ubyte$"):
        fetch.fetch("tiny2", tmp_path / "dest", from_dir=src)


def test_fetch_from_local_copies(tmp_path, tiny):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-ubyte").write_bytes(tiny["a-ubyte"])                 # raw form
    (src / "b-ubyte.gz").write_bytes(gzip.compress(tiny["b-ubyte"]))
    dest = fetch.fetch("tiny", tmp_path / "dest", from_dir=src)
    assert (dest / "a-ubyte").read_bytes() == tiny["a-ubyte"]
    assert gzip.decompress((dest / "b-ubyte.gz").read_bytes()) == tiny["b-ubyte"]
    (src / "a-ubyte").write_bytes(b"tampered")
    with pytest.raises(ValueError, match=f"a-ubyte: md5 {md5(b'tampered')} does not match"):
        fetch.fetch("tiny", tmp_path / "dest2", from_dir=src)
    (tmp_path / "dest3").mkdir()
    with pytest.raises(FileNotFoundError, match="a-ubyte.gz"):
        fetch.fetch("tiny", tmp_path / "dest3", from_dir=tmp_path / "dest3")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fetch.fetch("tiny", tmp_path / "dest4", from_dir=tmp_path / "nowhere")
    assert not (tmp_path / "dest4").exists()  # a --from typo leaves no data folder behind
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"--from folder \S*a-file is not a folder"):
        fetch.fetch("tiny", tmp_path / "dest5", from_dir=tmp_path / "a-file")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        fetch.fetch("cifar")


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"data_dir .*afile: cannot create the data folder"):
        fetch.fetch("mnist", tmp_path / "afile")


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def tiny_events(monkeypatch):
    """An N-MNIST-like dataset: two zips extracting to Train/ and Test/."""
    zips = {"train.zip": zip_bytes({"Train/0/00001.bin": b"\x01" * 5}),
            "test.zip": zip_bytes({"Test/7/00001.bin": b"\x02" * 5})}
    spec = fetch.Spec(tuple(fetch.Remote(k, md5(v), f"files/{k}/download") for k, v in
                            zips.items()), ("http://mirror.invalid/",), extract=True,
                      folders=("Train", "Test"))
    monkeypatch.setitem(fetch.DATASETS, "tiny-events", spec)
    return zips


def test_fetch_extracts_archives(server, tmp_path, tiny_events):
    server.files.update({f"files/{k}/download": v for k, v in tiny_events.items()})
    dest = fetch.fetch("tiny-events", tmp_path, mirrors=[server.url], progress=False)
    assert (dest / "Train" / "0" / "00001.bin").read_bytes() == b"\x01" * 5
    assert (dest / "Test" / "7" / "00001.bin").read_bytes() == b"\x02" * 5
    again = fetch.fetch("tiny-events", tmp_path / "copy", from_dir=dest)  # extracted folders
    assert (again / "Test" / "7" / "00001.bin").exists()
    assert not (again / "SIMULATED.json").exists()


def test_an_import_of_half_the_folders_names_both_forms(tmp_path, tiny_events):
    src = tmp_path / "half"
    (src / "Train" / "0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train.zip \(or its raw form\) not found in "
                                                r"\S*half, nor the extracted Train/ and Test/"):
        fetch.fetch("tiny-events", tmp_path / "data", from_dir=src)


def test_imported_simulated_recordings_stay_labelled(tmp_path, tiny_events):
    """The simulator's SIMULATED.json travels with the folders (once left behind: the copy then
    trained unlabelled, as if real N-MNIST)."""
    src = tmp_path / "sim"
    for split in ("Train", "Test"):
        (src / split / "0").mkdir(parents=True)
        (src / split / "0" / "00001.bin").write_bytes(b"\x01" * 5)
    (src / "SIMULATED.json").write_text('{"complete": true}')
    dest = fetch.fetch("tiny-events", tmp_path / "data", from_dir=src)
    assert (dest / "SIMULATED.json").read_text() == '{"complete": true}'


def test_an_interrupted_simulation_is_not_imported_nor_kept_as_done(tmp_path, tiny_events):
    """--from a simulation cut off is refused; a destination holding one imported before (older
    versions took it) is replaced whole once the source is finished."""
    src = tmp_path / "sim"
    for split in ("Train", "Test"):
        (src / split / "0").mkdir(parents=True)
        (src / split / "0" / "00001.bin").write_bytes(b"\x01" * 5)
    (src / "SIMULATED.json").write_text('{"complete": false}')
    with pytest.raises(ValueError, match=r"--from \S*sim: an interrupted simulation .*finish it"):
        fetch.fetch("tiny-events", tmp_path / "data", from_dir=src)
    dest = tmp_path / "data" / "tiny-events"
    shutil.copytree(src, dest, dirs_exist_ok=True)  # what an older version imported
    (src / "Test" / "0" / "00002.bin").write_bytes(b"\x02" * 5)  # the simulation finished
    (src / "SIMULATED.json").write_text('{"complete": true}')
    assert fetch.fetch("tiny-events", tmp_path / "data", from_dir=src) == dest
    assert (dest / "SIMULATED.json").read_text() == '{"complete": true}'
    assert sorted(p.name for p in (dest / "Test" / "0").iterdir()) == ["00001.bin", "00002.bin"]


def test_a_transfer_broken_off_mid_stream_is_an_os_error_to_resume(tmp_path, monkeypatch):
    """http.client's IncompleteRead is no OSError: the next mirror is tried, and the command
    prints one line, with the partial file kept."""
    import http.client

    class Response:
        status, headers = 200, {"Content-Length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            raise http.client.IncompleteRead(b"abc", 97)

    monkeypatch.setattr(fetch, "urlopen", lambda request, timeout: Response())
    with pytest.raises(OSError, match=r"x.gz: the transfer broke off \(IncompleteRead.*run again"):
        fetch.download("http://mirror/x.gz", tmp_path / "x.gz", "0" * 32, progress=False)
    assert (tmp_path / "x.gz.part").exists()


def test_fetch_finishes_an_extraction_cut_short(server, tmp_path, tiny_events):
    """Train/ there but not Test/ (killed between the two archives): both are extracted again
    from the verified archives, without downloading them again."""
    server.files.update({f"files/{k}/download": v for k, v in tiny_events.items()})
    dest = fetch.fetch("tiny-events", tmp_path, mirrors=[server.url], progress=False)
    shutil.rmtree(dest / "Test")
    (dest / "Train" / "0" / "00001.bin").write_bytes(b"half")
    n = len(server.log)
    assert fetch.fetch("tiny-events", tmp_path, mirrors=[server.url], progress=False) == dest
    assert (dest / "Test" / "7" / "00001.bin").read_bytes() == b"\x02" * 5
    assert (dest / "Train" / "0" / "00001.bin").read_bytes() == b"\x01" * 5
    assert len(server.log) == n


def test_fetch_from_a_folder_with_only_some_extracted_folders_wants_the_archives(
        tmp_path, tiny_events):
    src = tmp_path / "src"
    (src / "Train" / "0").mkdir(parents=True)
    (src / "Train" / "0" / "00001.bin").write_bytes(b"\x01" * 5)
    with pytest.raises(FileNotFoundError, match="train.zip .*not found"):
        fetch.fetch("tiny-events", tmp_path / "dest", from_dir=src)


def test_cli_fetch_from(tmp_path, tiny):
    src = tmp_path / "src"
    src.mkdir()
    for k, v in tiny.items():
        (src / k).write_bytes(v)
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "fetch", "mnist", "--from", str(src),
                              "--data-dir", str(tmp_path / "dest")])
    assert args.name == "mnist" and args.from_dir == str(src)
    args.name = "tiny"  # the registered names are fixed by argparse choices
    assert args.func(args) == 0
    assert (tmp_path / "dest" / "tiny" / "a-ubyte").exists()


@pytest.mark.slow
def test_fetch_mnist_from_shared_copy_and_over_http(server, tmp_path):
    if not (SHARED / "mnist").is_dir():
        pytest.skip("no shared data here")
    dest = fetch.fetch("mnist", tmp_path / "a", from_dir=SHARED)
    assert sorted(p.name for p in dest.iterdir()) == sorted(r.name for r in
                                                            fetch.DATASETS["mnist"].files)
    server.files.update({p.name: p.read_bytes() for p in (SHARED / "mnist").glob("*.gz")})
    dest = fetch.fetch("mnist", tmp_path / "b", mirrors=[server.url], progress=False)
    assert len(list(dest.glob("*.gz"))) == 4
