"""benchmarks.common.command: the recorded command reruns the table, without options that only say where or how fast."""

from benchmarks.common import command


def test_options_that_do_not_change_results_are_left_out_with_their_value():
    argv = ["--split", "test", "--cache", "/work/cache_B", "--shard=0/2", "--threads", "1", "--out-dir", "/tmp/x", "--tag", "s2"]
    assert command("shapes_protocol", argv, without=("--cache", "--shard", "--out-dir")) == (
        "python -m benchmarks.shapes_protocol --split test --threads 1 --tag s2")
    assert command("nlg_cost", argv) == "python -m benchmarks.nlg_cost " + " ".join(argv)  # nothing dropped by default
    # an option whose name only starts like a dropped one is kept
    assert command("x", ["--cache-size", "3", "--cache", "c"], without=("--cache",)) == "python -m benchmarks.x --cache-size 3"
