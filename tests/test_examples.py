"""The examples run end to end on small sizes, so they never rot."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_cnn_learns_and_takes_any_batch_size(capsys):
    # 300 samples in batches of 64: the last batch has 44 samples, a batch size the layer never saw before
    accuracy = _load("seed_cnn").main(["--epochs", "4", "--samples", "300"])
    assert "epoch 4" in capsys.readouterr().out
    assert accuracy > 0.6  # chance is 0.5; the burst is easy to find


def test_variational_lstm_trains_both_models(capsys):
    results = _load("variational_lstm").main(["--epochs", "2", "--samples", "300", "--steps", "8"])
    assert set(results) == {"plain dropout", "locked + weight dropout"}
    assert all(acc > 0.6 for acc in results.values())
    assert "test accuracy" in capsys.readouterr().out


def test_mc_uncertainty_is_wider_far_from_the_data(tmp_path, capsys):
    out = tmp_path / "band.png"
    result = _load("mc_uncertainty").main(["--steps", "200", "--passes", "10", "--plot", str(out)])
    assert result["train_mse"] < 0.05  # sin(x) on [-2, 2] has variance 0.6 and the noise 0.01: it fits
    assert result["std_near_data"] > 0  # the passes differ
    # What the example is there to show: the spread grows away from the data (about 4x at these
    # settings and at the defaults); 2x leaves room for other platforms' float rounding.
    assert result["std_far_from_data"] > 2 * result["std_near_data"]
    assert "times wider where there was no data" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flax_sequence_dropout_learns(capsys):
    accuracy = _load("flax_sequence_dropout").main(["--steps", "100", "--samples", "400"])
    assert accuracy > 0.7  # chance is 0.5; 0.85 on this data set
    assert "test accuracy" in capsys.readouterr().out
