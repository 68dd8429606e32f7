"""augment [shift(k), flip_lr]: seeded per (seed, epoch, step), images only, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import DataError, SpecError
from netlang.ir.types import DType, TensorType
from netlang.train.augment import Augmenter, flip_lr, make_augmenter, shift
from netlang.train.config import Call, train_config

IMAGES = np.random.default_rng(0).random((8, 6, 6, 1)).astype(np.float32)


def test_shift_moves_each_image_by_at_most_k_pixels_and_fills_with_the_background():
    out = shift(IMAGES, np.random.default_rng(1), pixels=2)
    assert out.shape == IMAGES.shape and out.dtype == IMAGES.dtype
    for before, after in zip(IMAGES[..., 0], out[..., 0]):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(after[max(0, -dy):6 - max(0, dy), max(0, -dx):6 - max(0, dx)],
                                   before[max(0, dy):6 + min(0, dy), max(0, dx):6 + min(0, dx)])]
        assert found, "each image is a shifted copy of its original"
    assert set(np.unique(out)) <= set(np.unique(IMAGES))      # no new values: only the min


def test_flip_lr_mirrors_about_half_the_images():
    out = flip_lr(IMAGES, np.random.default_rng(3))
    flipped = [np.array_equal(o, i[:, ::-1]) and not np.array_equal(o, i)
               for o, i in zip(out, IMAGES)]
    kept = [np.array_equal(o, i) for o, i in zip(out, IMAGES)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < len(IMAGES)


def test_the_draws_depend_on_seed_epoch_and_step_alone():
    augment = Augmenter([Call("shift", {"pixels": 2}), Call("flip_lr")], seed=5)
    first = augment(IMAGES, epoch=3, step=40)
    assert np.array_equal(first, Augmenter(augment.calls, 5)(IMAGES, epoch=3, step=40))
    assert not np.array_equal(first, augment(IMAGES, epoch=3, step=41))
    assert augment.describe() == "shift(2), flip_lr"


def test_the_train_section_takes_one_or_a_list_and_names_unknown_ones():
    base = "network n {\n  input x: f32[N, 4, 4, 1]\n  output y = x\n}\ntrain n { augment %s }\n"
    for text, want in (("shift(3)", (Call("shift", {"pixels": 3}),)),
                       ("[shift, flip_lr]", (Call("shift", {"pixels": 2}), Call("flip_lr")))):
        config = train_config(netlang.compile(base % text).graph.spec.train, "n")
        assert [(c.name, c.args) for c in config.augment] == [(c.name, c.args) for c in want]
    with pytest.raises(SpecError) as info:
        netlang.compile(base % "[shift(2), flip_ud]", "a.net")
    assert str(info.value).splitlines()[0] == "a.net:5:30: name error: unknown augmentation 'flip_ud'"
    assert str(info.value).splitlines()[-1] == ("hint: did you mean 'flip_lr'? (augmentations: "
                                                "shift, flip_lr)")


def test_augmenting_needs_an_image_input():
    with pytest.raises(DataError) as info:
        make_augmenter([Call("shift", {"pixels": 2})], 0, "x", TensorType(DType.f32, ("N", 784)))
    assert str(info.value).startswith("data error: augment moves pixels of images, but input "
                                      "'x' is f32[N,784]")


def test_a_run_with_augmentation_resumes_bit_for_bit(tmp_path, capsys):
    from netlang.cli import main
    from netlang.runtime.checkpoint import read

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pics.npz", x=rng.random((48, 6, 6, 1)).astype(np.float32),
             y=rng.integers(0, 3, 48))
    spec = tmp_path / "pics.net"
    spec.write_text(f"""network pics {{
  input x: f32[N, 6, 6, 1]
  input label: i32[N]
  logits = x |> conv2d(4, kernel=3, padding=same) |> relu |> flatten |> dense(3)
  loss xent = mean(softmax_cross_entropy(logits, label))
}}
train pics {{ data npz("{tmp_path / 'pics.npz'}"); augment [shift(1), flip_lr]
              optimizer adam(lr=1e-2); batch 16; epochs 2; seed 4 }}
""")
    assert main(["train", str(spec), "--out", str(tmp_path / "straight")]) == 0
    assert "augment shift(1), flip_lr" in capsys.readouterr().out.splitlines()[0]
    assert main(["train", str(spec), "--out", str(tmp_path / "split"), "--stop-after", "1"]) == 0
    assert main(["train", str(spec), "--out", str(tmp_path / "split"), "--resume"]) == 0
    a, _ = read(tmp_path / "straight" / "last.ckpt")
    b, _ = read(tmp_path / "split" / "last.ckpt")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    plain = tmp_path / "plain.net"
    plain.write_text(spec.read_text().replace("augment [shift(1), flip_lr]\n", ""))
    assert main(["train", str(plain), "--out", str(tmp_path / "plain")]) == 0
    c, _ = read(tmp_path / "plain" / "last.ckpt")
    assert not np.array_equal(a["conv1/W"], c["conv1/W"])     # augmentation changed training


def test_augment_may_be_given_in_the_data_section_once():
    base = "network n {\n  input x: f32[N, 4, 4, 1]\n  output y = x\n}\ntrain n { %s }\n"
    config = train_config(netlang.compile(
        base % "data mnist(validation=5000, augment=[shift(2), flip_lr])").graph.spec.train, "n")
    assert config.data.args == {"validation": 5000}
    assert [(c.name, c.args) for c in config.augment] == [("shift", {"pixels": 2}),
                                                          ("flip_lr", {})]
    with pytest.raises(SpecError) as info:
        netlang.compile(base % "augment [shift]\n data mnist(augment=[flip_lr])", "a.net")
    assert str(info.value).splitlines()[0] == (
        "a.net:5:11: error: augment is given twice: in data(...) and as a setting")
