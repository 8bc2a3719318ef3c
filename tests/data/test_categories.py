import pytest

from yolomlu.data.categories import COCO80_NAMES, COCO80_TO_91, category_ids_for_model, class_names_for
from yolomlu.data.coco import DataError

COCO_CATS = [{"id": i, "name": n} for i, n in zip(COCO80_TO_91, COCO80_NAMES)]


def test_coco_tables():
    assert len(COCO80_NAMES) == 80 == len(set(COCO80_NAMES)) == len(COCO80_TO_91)
    assert COCO80_TO_91[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert COCO80_TO_91[-1] == 90 and list(COCO80_TO_91) == sorted(COCO80_TO_91)
    assert COCO80_NAMES[0] == "person" and COCO80_NAMES[11] == "stop sign" and COCO80_NAMES[79] == "toothbrush"
    # stop sign is id 13 in the 91-id scheme (12 was never annotated)
    assert dict(zip(COCO80_NAMES, COCO80_TO_91))["stop sign"] == 13


def test_full_coco_uses_91_scheme():
    assert category_ids_for_model(list(reversed(COCO_CATS)), 80) == list(COCO80_TO_91)
    assert class_names_for(COCO_CATS, 80) == list(COCO80_NAMES)


def test_coco_subset_keeps_coco_indices():
    # A file listing only person (1) and car (3): model class 2 (car) must still map to 3.
    cats = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]
    ids = category_ids_for_model(cats, 80)
    assert ids[0] == 1 and ids[2] == 3


def test_other_dataset_sorted_by_id():
    cats = [{"id": 10, "name": "b"}, {"id": 4, "name": "a"}, {"id": 7, "name": "c"}]
    assert category_ids_for_model(cats, 3) == [4, 7, 10]
    assert class_names_for(cats, 5) == ["a", "c", "b", "class3", "class4"]


def test_more_categories_than_nc_names_both_numbers():
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 8)]
    with pytest.raises(DataError, match=r"7 categories.*nc=6"):
        category_ids_for_model(cats, 6)
    with pytest.raises(DataError, match=r"80 categories.*nc=6"):
        class_names_for(COCO_CATS, 6)
