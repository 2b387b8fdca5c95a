"""The renderer's new shapes (fine-tuning teaches them) and the extended judge that sees them.

No model needed: renders only. The shipped scenes must not change (``sample_scene`` never draws a
new shape), and the original judge keeps its own CNN and class list."""

from __future__ import annotations

import random

from generation.engine.training import dataset, judge


def test_new_shapes_are_drawn_but_never_sampled():
    assert set(dataset.NEW_SHAPES) == {"hexagon", "crescent"}
    assert not set(dataset.NEW_SHAPES) & set(dataset.SHAPES)
    assert not set(dataset.NEW_SHAPES) & set(dataset.vocabulary())
    rng = random.Random(11)
    for _ in range(300):
        assert all(o.shape in dataset.SHAPES for o in dataset.sample_scene(rng).objects)
    hexagon, crescent, circle = (
        dataset.render(dataset.Scene((dataset.Obj(s, "red", "large", "centre", 64, 64),), "blue"))
        for s in ("hexagon", "crescent", "circle"))
    assert len({hexagon.tobytes(), crescent.tobytes(), circle.tobytes()}) == 3


def test_training_and_held_out_scenes_share_no_colour_background_or_position():
    train = dataset.new_shape_training_scenes("crescent", 20, token="zwx")
    test = dataset.new_shape_test_scenes("crescent", 50, token="zwx")
    assert len(train) == 20 and len(test) == 50
    assert not {s.objects[0].colour for s in train} & {s.objects[0].colour for s in test}
    assert not {s.background for s in train} & {s.background for s in test}
    assert not {s.objects[0].position for s in train} & {s.objects[0].position for s in test}
    assert all(s.objects[0].shape == "crescent" and "zwx" in s.caption.split() for s in train + test)
    assert all("crescent" not in s.caption for s in train + test)
    assert train[3].caption == dataset.new_shape_training_scenes("crescent", 20, token="zwx")[3].caption


def test_extended_judge_recognises_new_and_old_shapes_on_fresh_renders():
    acc = judge.new_shape_accuracy_on_renders(40, seed=999)
    assert acc["hexagon"] >= 0.9 and acc["crescent"] >= 0.9, acc
    old = judge.accuracy_on_renders(60, seed=4242, extended=True)
    assert old["shape"] >= 0.9 and old["colour"] == 1.0, old
    # The original judge is unchanged: its own class list and weights file.
    assert judge.shape_net().net[-1].out_features == len(dataset.SHAPES)
    assert judge.shape_net(extended=True).net[-1].out_features == len(judge.EXT_SHAPES)
    s = dataset.Scene((dataset.Obj("hexagon", "yellow", "large", "left", 30, 64),), "black")
    assert judge.judge(dataset.render(s)).objects[0].shape in dataset.SHAPES
    assert judge.judge(dataset.render(s), extended=True).objects[0].shape == "hexagon"
