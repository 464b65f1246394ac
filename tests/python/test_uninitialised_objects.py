"""Objects made with ``cls.__new__(cls)``, whose __init__ never ran, raise TypeError when used
instead of reading uninitialised memory (pickle and copy make such objects, then __setstate__)."""

from __future__ import annotations

import copy
import pickle

import pytest

import llmds._core as core

CLASSES = sorted(
    (obj for name, obj in vars(core).items() if isinstance(obj, type) and not name.startswith("_")),
    key=lambda c: c.__name__,
)

# One call per class that reaches into the C++ object: its repr where it has its own, else a
# method that reads state.
USES = {
    "TokenStream": lambda o: next(iter(o)),
}


def test_every_class_of_the_extension_is_covered() -> None:
    assert len(CLASSES) >= 20
    assert {c.__name__ for c in CLASSES} >= {"HNSW", "TokenLRU", "CountMinSketch", "InvertedIndex", "Engine"}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_using_an_object_whose_init_never_ran_is_a_type_error(cls: type) -> None:
    obj = cls.__new__(cls)
    use = USES.get(cls.__name__, repr)
    with pytest.raises(TypeError, match="not initialised"):
        use(obj)


@pytest.mark.parametrize(
    ("cls", "method", "args"),
    [
        (core.CountMinSketch, "add", ("x",)),
        (core.InvertedIndex, "search", ("x",)),
        (core.HNSW, "__len__", ()),
        (core.TokenLRU, "put", ("k", [1])),
        (core.KVCache, "stats", ()),
        (core.Scheduler, "submit", (3,)),
        (core.IndexedHeap, "push", (1, 2.0)),
    ],
)
def test_methods_of_uninitialised_objects_raise_type_error(cls: type, method: str, args: tuple) -> None:
    obj = cls.__new__(cls)
    with pytest.raises(TypeError, match="not initialised"):
        getattr(obj, method)(*args)


def test_unpickling_which_creates_objects_with_new_still_works() -> None:
    sketch = core.CountMinSketch(width=64, depth=3)
    sketch.add("a")
    copy = pickle.loads(pickle.dumps(sketch))
    assert copy.estimate("a") == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pickling_an_uninitialised_object_is_a_type_error_at_every_protocol(cls: type, protocol: int) -> None:
    # Protocols 0 and 1 once went through copyreg._reduce_ex, which made pybind11 throw a C++
    # exception through Python and abort the process, for every class.
    with pytest.raises(TypeError):
        pickle.dumps(cls.__new__(cls), protocol)


MADE = {
    "CountMinSketch": lambda: core.CountMinSketch(width=32, depth=2),
    "HNSW": lambda: core.HNSW(4),
    "InvertedIndex": lambda: core.InvertedIndex(),
    "TokenLRU": lambda: core.TokenLRU(),
    "IndexedHeap": lambda: core.IndexedHeap(),
    "Scheduler": lambda: core.Scheduler(),
    "KVCache": lambda: core.KVCache(page_size=4, max_pages=4),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", sorted(MADE))
def test_every_protocol_round_trips_or_refuses_with_type_error(name: str, protocol: int) -> None:
    obj = MADE[name]()
    try:
        data = pickle.dumps(obj, protocol)
    except TypeError as e:
        assert "cannot pickle" in str(e)
        with pytest.raises(TypeError):
            obj.__reduce__()
        return
    assert type(pickle.loads(data)) is type(obj)
    assert type(copy.deepcopy(obj)) is type(obj)
