"""``cmim demo`` end to end on a tiny model: every feature set gets a finite RMSE per fold."""

import re

from sklearn_cmim import CMIMTransformer, cli
from tests.conftest import TINY


def test_demo_cross_validates_cmim_beside_ecfp(tmp_path, esol, capsys):
    CMIMTransformer(**TINY).fit(esol[0][:40]).save_pretrained(tmp_path / "tiny")
    assert cli.main(["demo", "--model", str(tmp_path / "tiny"), "--molecules", "60", "--folds", "2"]) == 0
    out = capsys.readouterr()
    rows = re.findall(r"^(ECFP4.*|cMIM (?:latent|informative).*?)\s+(\d+\.\d+) ± (\d+\.\d+)$",
                      out.out, flags=re.MULTILINE)
    assert [r[0].split()[0] + " " + r[0].split()[1] for r in rows] == [
        "ECFP4 (2048", "cMIM latent", "cMIM informative"]
    assert all(0 < float(r[1]) < 10 for r in rows)
    assert "cross-validation" in out.err  # the progress bar
    # Molecules 40-59 hold three Br, which the tiny model never saw: one line for the whole run,
    # not one per fit and transform of every fold.
    assert out.err.count("warning") == 1
    assert out.err.endswith("cmim demo: warning: 3 tokens are not in the model's vocabulary and were "
                            "read as <unk>: 'Br' x3\n")


def test_demo_with_an_unknown_model_is_a_one_line_error(capsys):
    assert cli.main(["demo", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-model" in err[0]
