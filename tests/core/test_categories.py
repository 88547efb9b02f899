import numpy as np
import pytest

from segpipe.core.categories import CategoryMapper
from segpipe.core.records import Category, ImageInfo, Instance, InstanceMask, Materialized, Sample
from segpipe.errors import ConfigError

CATS = [Category(1, "person"), Category(3, "car"), Category(8, "truck"), Category(10, "light")]


def test_rename_merge_drop_ids():
    m = CategoryMapper.build(
        {"rename": {"person": "pedestrian"}, "merge": {"vehicle": ["car", "truck"]}, "drop": ["light"],
         "ids": {"vehicle": 2}},
        CATS,
    )
    assert m.id_map == {1: 1, 3: 2, 8: 2, 10: None}
    assert [(c.id, c.name) for c in m.categories] == [(1, "pedestrian"), (2, "vehicle")]


def test_original_ids_kept_by_default():
    m = CategoryMapper.build({"rename": {"car": "auto"}}, CATS)
    assert [(c.id, c.name) for c in m.categories] == [(1, "person"), (3, "auto"), (8, "truck"), (10, "light")]


def test_unlisted_drop():
    m = CategoryMapper.build({"rename": {"car": "car"}, "unlisted": "drop"}, CATS)
    assert [c.name for c in m.categories] == ["car"]


@pytest.mark.parametrize(
    "spec, where",
    [({"drop": ["bike"]}, "drop[0]"), ({"merge": {"v": []}}, "merge.v"), ({"ids": {"person": 3}}, "ids"),
     ({"ids": {"nobody": 3}}, "ids.nobody"), ({"unlisted": "maybe"}, "unlisted")],
)
def test_bad_maps_name_the_field(spec, where):
    with pytest.raises(ConfigError) as e:
        CategoryMapper.build(spec, CATS, source="map.yaml")
    assert f"map.yaml: {where}" in str(e.value)


def test_apply_to_sample():
    m = CategoryMapper.build({"merge": {"vehicle": ["car", "truck"]}, "drop": ["light"]}, CATS)
    img = ImageInfo(1, "a.jpg", 3, 2)
    insts = tuple(InstanceMask(Instance(i, 1, c)) for i, c in enumerate([1, 3, 8, 10]))
    cm = np.array([[0, 1, 3], [8, 10, 255]], dtype=np.uint8)
    out = m.apply(Materialized(Sample(img), insts, class_map=cm))
    assert [im.instance.category_id for im in out.instances] == [1, 3, 3]
    np.testing.assert_array_equal(out.class_map, [[0, 1, 3], [3, 255, 255]])
