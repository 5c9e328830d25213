"""From the label column users have to class ids.

Three shapes of label column become a model's classes:
- distinct values (strings, integers, booleans): the class names are the
  values, sorted (`neg`/`pos`, `bad`/`good`, `1`...`5`), or given in order
  with `--class-names`; 0/1 integers are named `neg`/`pos` unless named
  otherwise;
- a numeric column mapped with `--label-map`, e.g. `neg:<=2,pos:>=4` for
  star ratings (or `neg:<=2,mixed:=3,pos:>=4`): each class is a condition
  on the value, rows that meet none are dropped and counted;
- the class folders of an aclImdb-style tree (`neg/`, `pos/`).
With two classes the first is the negative one, the second the positive one
whose probability the model outputs; with more, the model outputs every
class's probability and the likeliest class wins.
"""
import dataclasses
import operator
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_CLASS_NAMES = ("neg", "pos")
# More distinct values than this is more likely a score than a class.
MAX_CLASSES = 20
_COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt,
                ">": operator.gt, "==": operator.eq, "=": operator.eq}
_RULE = re.compile(r"^\s*([^:,]+?)\s*:\s*(<=|>=|==|=|<|>)\s*(-?[0-9.]+)\s*$")


class LabelError(ValueError):
  """Labels that do not make two classes, or a label map that is malformed."""


@dataclasses.dataclass(frozen=True)
class ClassRule:
  """One class of a label map: its name and the condition on the value."""
  name: str
  comparison: str
  value: float

  def matches(self, values: np.ndarray) -> np.ndarray:
    return _COMPARISONS[self.comparison](values, self.value)

  def __str__(self):
    value = int(self.value) if self.value == int(self.value) else self.value
    return f"{self.name}:{self.comparison}{value}"


def parse_label_map(spec: str) -> Tuple[ClassRule, ...]:
  """`neg:<=2,pos:>=4` → rules, in class order (negative first)."""
  rules = []
  for part in spec.split(","):
    match = _RULE.match(part)
    if not match:
      raise LabelError(f"{part.strip()!r} is not CLASS:CONDITION "
                       "(e.g. neg:<=2,pos:>=4)")
    rules.append(ClassRule(match.group(1), match.group(2),
                           float(match.group(3))))
  names = [rule.name for rule in rules]
  if len(rules) < 2 or len(set(names)) != len(names):
    raise LabelError(f"{spec!r}: a label map names two or more different "
                     "classes, the negative one first (e.g. neg:<=2,pos:>=4)")
  return tuple(rules)


def parse_class_names(spec: str) -> Tuple[str, ...]:
  names = tuple(name.strip() for name in spec.split(","))
  if len(names) < 2 or not all(names) or len(set(names)) != len(names):
    raise LabelError(f"{spec!r}: give two or more different class names, "
                     "the negative one first (e.g. neg,pos)")
  return names


@dataclasses.dataclass(frozen=True)
class LabelScheme:
  """How the label column becomes class ids; recorded in the model card."""
  class_names: Optional[Tuple[str, ...]] = None  # None: from the data
  label_map: Tuple[ClassRule, ...] = ()

  @classmethod
  def from_options(cls, class_names: Optional[str] = None,
                   label_map: Optional[str] = None) -> "LabelScheme":
    if label_map:
      rules = parse_label_map(label_map)
      if class_names:
        raise LabelError("--label-map names the classes already; drop "
                         "--class-names")
      return cls(class_names=tuple(r.name for r in rules), label_map=rules)
    return cls(class_names=parse_class_names(class_names)
               if class_names else None)

  def describe(self) -> dict:
    return {"class_names": list(self.class_names or ()),
            "label_map": ",".join(map(str, self.label_map)) or None}

  def with_class_names(self, names: Sequence[str]) -> "LabelScheme":
    return dataclasses.replace(self, class_names=tuple(names))

  def tree_class_names(self) -> Tuple[str, ...]:
    """The class folders an aclImdb-style tree is read from."""
    if self.label_map:
      raise LabelError("--label-map applies to a label column, not to the "
                       "class folders of a tree")
    return self.class_names or DEFAULT_CLASS_NAMES

  def apply(self, column: pa.ChunkedArray, where: str
            ) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Class ids (-1: dropped by the label map) and the class names.

    Null labels must have been removed by the caller.
    """
    if self.label_map:
      return self._mapped(column, where), self.class_names
    values = column.to_pylist()
    if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
      return self._integers(np.asarray(values, np.int64), where)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
      return self._strings(values, where)
    raise LabelError(f"{where}: labels of type {column.type} are neither "
                     "class names nor class ids; map numbers with "
                     "--label-map (e.g. neg:<=2,pos:>=4)")

  def _mapped(self, column, where) -> np.ndarray:
    if not (pa.types.is_integer(column.type) or
            pa.types.is_floating(column.type)):
      raise LabelError(f"{where}: --label-map needs a numeric label column, "
                       f"not {column.type}")
    values = np.asarray(pc.cast(column, pa.float64()).to_numpy(
        zero_copy_only=False))
    matches = np.stack([rule.matches(values) for rule in self.label_map])
    several = matches.sum(axis=0) > 1
    if several.any():
      raise LabelError(f"{where}: value {values[several][0]:g} meets more "
                       "than one class of --label-map "
                       f"{self.describe()['label_map']}")
    return np.where(matches.any(axis=0), matches.argmax(axis=0),
                    -1).astype(np.int32)

  def _check_count(self, found: List, where: str) -> None:
    if len(found) > MAX_CLASSES:
      raise LabelError(
          f"{where}: {len(found)} label values {found[:8]}...: more than "
          f"{MAX_CLASSES} classes; map them with --label-map (e.g. "
          "neg:<=2,pos:>=4)")
    if len(found) < 2:
      raise LabelError(f"{where}: every label is {found[0]!r}: one class "
                       "only; name them all with --class-names")

  def _integers(self, values: np.ndarray, where: str):
    found = sorted(set(values.tolist()))
    names = self.class_names
    if names and all(name.lstrip("-").isdigit() for name in names):
      # The classes are the numbers themselves (read with a model's names).
      index = {int(name): i for i, name in enumerate(names)}
      unknown = [v for v in found if v not in index]
      if unknown:
        raise LabelError(f"{where}: labels {unknown[:5]} are not among "
                         f"{list(names)}")
      return (np.asarray([index[v] for v in values.tolist()], np.int32),
              tuple(names))
    if names or set(found) <= {0, 1}:
      names = names or DEFAULT_CLASS_NAMES
      if found and (found[0] < 0 or found[-1] >= len(names)):
        raise LabelError(f"{where}: label ids must lie in [0, {len(names)}) "
                         f"to go with the classes {list(names)} (found "
                         f"{found[:8]})")
      return values.astype(np.int32), tuple(names)
    # Other numbers (e.g. -1 and 1, or 1-5 stars): one class each, in order.
    self._check_count(found, where)
    index = {value: i for i, value in enumerate(found)}
    return (np.asarray([index[v] for v in values.tolist()], np.int32),
            tuple(str(v) for v in found))

  def _strings(self, values: List[str], where: str):
    found = sorted(set(values))
    names = self.class_names
    if names is None:
      self._check_count(found, where)
      names = tuple(found)
    index = {name: i for i, name in enumerate(names)}
    unknown = [v for v in found if v not in index]
    if unknown:
      raise LabelError(f"{where}: labels {unknown[:5]} are not among "
                       f"{list(names)}")
    return np.asarray([index[v] for v in values], np.int32), names
