"""Data loading, cleaning and the tutorial split; every bad input is one DataError line."""
import numpy as np
import pandas as pd
import pytest

from ipytinyml.data import load_autompg, load_data
from ipytinyml.errors import DataError


def test_bundled_autompg_has_398_rows_and_6_missing_horsepower():
    df = load_autompg()
    assert len(df) == 398
    assert int(df["horsepower"].isna().sum()) == 6
    assert df.loc[0, "mpg"] == 18.0 and df.loc[0, "horsepower"] == 130.0


def test_split_reproduces_the_tensorflow_tutorial():
    # The tutorial: dropna, then sample(frac=0.8, random_state=0); test = the rest.
    df = load_autompg().dropna()
    expected_train = df.sample(frac=0.8, random_state=0)
    expected_test = df.drop(expected_train.index)
    d = load_data("autompg", ["horsepower"], "mpg", seed=0)
    assert (d.n_train, d.n_test) == (314, 78)
    np.testing.assert_array_equal(d.train_x[:, 0], expected_train["horsepower"].to_numpy(np.float32))
    np.testing.assert_array_equal(d.test_y[:, 0], expected_test["mpg"].to_numpy(np.float32))


def test_seed_changes_the_split_and_is_reproducible():
    a, b, c = (load_data(seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.train_x, c.train_x)


def test_dataframe_and_csv_with_several_features(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50)})
    df["y"] = 2 * df["a"] - df["b"]
    from_frame = load_data(df, ["a", "b"], "y")
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    from_csv = load_data(str(path), ["a", "b"], "y")
    assert from_frame.train_x.shape == (40, 2)
    np.testing.assert_allclose(from_frame.train_x, from_csv.train_x, rtol=1e-6)
    assert from_frame.describe()["source"] == "DataFrame"


def _frame(**cols):
    return pd.DataFrame(cols)


@pytest.mark.parametrize("kwargs, message", [
    (dict(features=["horsepowr"]), "did you mean 'horsepower'"),
    (dict(label="mpgg"), "did you mean 'mpg'"),
    (dict(data="autompgg"), "did you mean 'autompg'"),
    (dict(features=[]), "no feature columns"),
    (dict(features=["mpg"], label="mpg"), "both a feature and the label"),
    (dict(data=_frame(x=list("abcdefghijkl"), y=range(12)), features=["x"], label="y"), "not numeric"),
    (dict(data=_frame(x=range(5), y=range(5)), features=["x"], label="y"), "at least 10"),
    (dict(data=_frame(x=range(20), y=[1.0, None] * 10), features=["x"], label="y"), "missing value"),
    (dict(data=42), "not int"),
])
def test_bad_data_is_one_line(kwargs, message):
    with pytest.raises(DataError) as info:
        load_data(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary = tmp_path / "model.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    one_col = tmp_path / "one.csv"
    one_col.write_text("x\n1\n2\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("x,x,y\n" + "".join(f"{i},{i},{i}\n" for i in range(20)))
    cases = [(empty, "empty"), (binary, "CSV"), (one_col, "column"), (tmp_path / "nope.csv", "no such"),
             (dup, "x")]
    for path, word in cases:
        with pytest.raises(DataError) as info:
            load_data(str(path), ["x"], "y")
        assert word in str(info.value), (path, str(info.value))
        assert "\n" not in str(info.value)
