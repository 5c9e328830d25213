"""README's "Your own data" commands and query, run as written.

A folder of CSV parts with `review_id`, `body` and 1-5 `stars` (real IMDB
reviews; their 1-10 ratings halved, and some mixed ones marked 3 stars) in a
working directory; then each `reviewscore` line of the README block, then its
DuckDB query. Catches the README drifting from what the commands accept, and
the journey's pieces (glob input, label map, carried columns) breaking.
"""
import json
import pathlib
import re
import shlex

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
  return README.read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]


def _commands():
  block = re.search(r"```bash\n(.*?)```", _section(), re.S).group(1)
  lines = block.replace("\\\n", " ").splitlines()
  return [shlex.split(line) for line in lines if line.strip()]


@pytest.fixture
def own_reviews(imdb_dir, tmp_path, monkeypatch):
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "rating"])
  ratings = table["rating"].to_numpy()
  rows = np.concatenate([np.flatnonzero(ratings == r)[:14]
                         for r in (1, 2, 3, 4, 7, 8, 9, 10)])
  table = table.take(np.sort(rows))
  ratings = table["rating"].to_numpy()
  stars = np.ceil(ratings / 2).astype(np.int64)
  mixed = np.flatnonzero((ratings == 4) | (ratings == 7))[::2]
  stars[mixed] = 3
  table = pa.table({"review_id": table["review_id"], "body": table["text"],
                    "stars": stars})
  (tmp_path / "reviews").mkdir()
  half = table.num_rows // 2
  pcsv.write_csv(table.slice(0, half), tmp_path / "reviews" / "part-0.csv")
  pcsv.write_csv(table.slice(half), tmp_path / "reviews" / "part-1.csv")
  monkeypatch.chdir(tmp_path)
  return table


@pytest.mark.slow
def test_own_data_journey_runs_as_the_readme_writes_it(own_reviews):
  commands = _commands()
  assert [c[:2] for c in commands] == [
      ["reviewscore", "import-encoder"], ["reviewscore", "train"],
      ["reviewscore", "score"], ["reviewscore", "report"]]
  for command in commands:
    result = CliRunner().invoke(main, command[1:])
    assert result.exit_code == 0, (command, result.output)

  stars = own_reviews["stars"].to_numpy()
  card = json.loads(pathlib.Path("models/stars/model_card.json").read_text())
  assert card["label_map"] == "neg:<=2,pos:>=4"
  assert card["data"]["dropped_by_label_map"] == int((stars == 3).sum()) > 0
  manifest = json.loads(pathlib.Path("scores/stars-manifest.json").read_text())
  assert manifest["counts"]["scored"] == own_reviews.num_rows
  assert json.loads(pathlib.Path("reports/stars/summary.json").read_text())[
      "rows"] == own_reviews.num_rows

  query = re.search(r"```sql\n(.*?)```", _section(), re.S).group(1)
  rows = duckdb.sql(query).fetchall()
  expected = {int(s): int((stars == s).sum()) for s in np.unique(stars)}
  assert {row[0]: row[1] for row in rows} == expected
  assert all(0.0 <= row[2] <= 1.0 and 0.0 <= row[3] <= 1.0 for row in rows)
