"""benchmarks/bench_search.py: the JSON rows and the Markdown table, on a cut-down quick plan."""
import json
import os
import sys

import pytest

pytest.importorskip("scipy")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def test_bench_search_quick_writes_rows(tmp_path):
    sys.path.insert(0, BENCH)
    try:
        import bench_search
    finally:
        sys.path.remove(BENCH)
    rc = bench_search.main(["--quick", "--only", "parity4_h4", "--seeds", "2", "--time-scale",
                            "0.1", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "bench_search.json").read_text())
    assert [r["method"] for r in rows] == ["search", "ftp_sh", "sste", "ste"]
    for r in rows:
        assert r["task"] == "parity4_h4" and r["seeds"] == 2 and 0 <= r["solved"] <= 2
        assert 0 <= r["median_seconds"] <= r["seconds_limit"] + 5
    table = (tmp_path / "bench_search.md").read_text()
    assert "| parity4_h4 | search |" in table and "torch" in table
    with pytest.raises(SystemExit):
        bench_search.main(["--quick", "--seeds", "0"])
