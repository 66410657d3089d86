"""The hot dataclasses whose ``__init__`` is written out (``init=False``, so that mypyc
compiles it) take exactly the dataclass's signature: every field, in order, with its default.

A field left out of the written ``__init__``, a parameter out of order or a default that
differs from the field's fails here, compiled (the suite runs the mypyc build) or not.
Fields declared ``init=False`` (derived in ``__init__``, as ``MinuteBucket.device_counts``)
are not parameters.
"""

from __future__ import annotations

import ast
import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.buckets import MinuteBucket
from detectors.conversion import ConversionVerdict
from detectors.latency import LatencyVerdict
from detectors.sketch import LogHistogram
from detectors.strata import StrataFit, _At, _Profile
from detectors.verdicts import CampaignVerdict, Estimate
from streams.records import SessionFact
from streams.session_state import SessionState

WRITTEN = [SessionFact, SessionState, MinuteBucket, ConversionVerdict, LatencyVerdict,
           StrataFit, _At, _Profile, CampaignVerdict, Estimate]


ROOT = Path(__file__).resolve().parents[2]


def _init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


@cache
def _annotations(cls: type) -> dict[str, str]:
    """The fields' annotations as written (a compiled class keeps only ``type`` for most)."""
    tree = ast.parse((ROOT / f"{cls.__module__.replace('.', '/')}.py").read_text())
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                and n.name == cls.__name__).body
    return {n.target.id: ast.unparse(n.annotation) for n in body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def _sample(cls: type, field: dataclasses.Field[Any], index: int) -> Any:
    """A value of the field's type, different for each field index."""
    annotation = _annotations(cls)[field.name]
    samples: dict[str, Any] = {
        "float": 1.5 + index, "int": 7 + index, "bool": index % 2 == 0, "str": f"s{index}",
        "float | None": 2.5 + index, "int | None": 9 + index, "str | None": f"o{index}",
        "FactKind": "order",
        "FloatArray": np.arange(3.0) + index, "tuple[float, ...]": (1.0 + index, 2.0),
        "Estimate": Estimate(1.0 + index, 0.5, 2.0 + index), "LogHistogram": LogHistogram(),
        "dict[int, int]": {index: 1}, "dict[str, list[Any]]": {f"b{index}": [1, 2]},
        "list[str]": [f"id{index}"], "list[PendingOrder]": [("o", index, 1.0, None)],
        "list[SentOrder]": [("o", index, 2.0)],
        "dict[str, DeviceRow] | None": {f"d{index}": (40.0, 0.5, 0.1, 3.0)},
        "dict[str, ConversionRow] | None": {f"c{index}": (12.0, 3.0)},
    }
    return samples[annotation]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b) and type(a) is type(b)


@pytest.mark.parametrize("cls", WRITTEN, ids=lambda c: c.__name__)
def test_every_field_in_order_positionally(cls: type) -> None:
    fields = _init_fields(cls)
    values = [_sample(cls, f, i) for i, f in enumerate(fields)]
    made = cls(*values)
    for field, value in zip(fields, values, strict=True):
        assert _same(getattr(made, field.name), value), field.name


@pytest.mark.parametrize("cls", WRITTEN, ids=lambda c: c.__name__)
def test_every_field_by_name(cls: type) -> None:
    fields = _init_fields(cls)
    values = {f.name: _sample(cls, f, i) for i, f in enumerate(fields)}
    made = cls(**values)
    assert all(_same(getattr(made, name), value) for name, value in values.items())
    assert dataclasses.replace(made) == made or cls in {_At, _Profile}  # arrays: no ==


@pytest.mark.parametrize("cls", WRITTEN, ids=lambda c: c.__name__)
def test_defaults_are_the_fields_defaults(cls: type) -> None:
    fields = _init_fields(cls)
    required = {f.name: _sample(cls, f, i) for i, f in enumerate(fields)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    made, again = cls(**required), cls(**required)
    for field in fields:
        if field.default is not dataclasses.MISSING:
            assert _same(getattr(made, field.name), field.default), field.name
        elif field.default_factory is not dataclasses.MISSING:
            value = getattr(made, field.name)
            assert type(value) is type(field.default_factory()), field.name
            assert value is not getattr(again, field.name)  # a new one for each instance


def test_numpy_scalars_become_builtin_numbers() -> None:
    estimate = Estimate(np.float64(1.0), np.float64(0.5), np.float64(2.0))
    assert all(type(getattr(estimate, f)) is float for f in ("value", "low", "high"))


@pytest.mark.parametrize("cls", [SessionFact, ConversionVerdict, LatencyVerdict, StrataFit,
                                 CampaignVerdict, Estimate], ids=lambda c: c.__name__)
def test_frozen_ones_stay_frozen(cls: type) -> None:
    fields = _init_fields(cls)
    made = cls(*[_sample(cls, f, i) for i, f in enumerate(fields)])
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError)):
        setattr(made, fields[0].name, _sample(cls, fields[0], 1))
