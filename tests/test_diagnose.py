from latentbench.cli import main
from latentbench.training.loop import train_cell


def test_diagnose_writes_a_report_with_every_plot(tiny_cell, cpu, tmp_path, capsys):
    for latent in ("2", "6"):
        train_cell(tiny_cell(latent=latent), cpu, checkpoint=tmp_path / "records" / f"m{latent}.pt", quiet=True)
    assert main(["diagnose", str(tmp_path), "--quiet"]) == 0
    for latent in ("2", "6"):
        folder = tmp_path / "diagnose" / f"m{latent}"
        report = (folder / "report.md").read_text()
        assert "hole_fraction" in report and "marginal_kl" in report and "active_units" in report
        for png in ("norms.png", "spectrum.png", "grids.png", "contours.png"):
            assert (folder / png).stat().st_size > 5000, png
            assert f"]({png})" in report
    assert "principal components" in (tmp_path / "diagnose" / "m6" / "report.md").read_text()


def test_diagnose_missing_target_is_one_line(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint or run folder" in capsys.readouterr().err
