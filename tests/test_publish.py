import shutil
from pathlib import Path

import pytest

from latentbench.cli import main

# every test reads one published grid, and each publishes or runs again: end to end, slow
pytestmark = pytest.mark.slow

TINY = ["--epochs", "2", "--n-samples", "150", "--quiet"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A small finished run, published as leaderboards/tiny."""
    root = tmp_path_factory.mktemp("pub")
    run = root / "run"
    assert main(["run", "--remedies", "vae,expost_gmm", "--latents", "2,4", "--out", str(run), *TINY]) == 0
    assert main(["publish", str(run), "--name", "tiny", "--dest", str(root / "leaderboards")]) == 0
    return root


def test_publish_writes_records_tables_csv_plots_and_an_index(published):
    lb = published / "leaderboards" / "tiny"
    assert len(list((lb / "records").glob("*.json"))) == 4 and not list((lb / "records").glob("*.pt"))
    readme = (lb / "README.md").read_text()
    assert "latentbench run --remedies vae,expost_gmm" in readme and "| expost_gmm" in readme
    assert "![fid_prior](fid_prior.png)" in readme and (lb / "fid_prior.png").stat().st_size > 5000
    assert "latentbench@" in readme or "0.1.0" in readme  # provenance per row
    header = (lb / "results.csv").read_text().splitlines()[0]
    assert "fid_prior" in header and "remedy" in header
    index = (published / "leaderboards" / "README.md").read_text()
    assert "[tiny](tiny/README.md)" in index


def test_a_compatible_run_merges_beside_the_published_rows(published, capsys):
    mine = published / "mine"
    assert main(["run", "--remedies", "vamp", "--latents", "2,4", "--out", str(mine), *TINY]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), str(mine)]) == 0
    out = capsys.readouterr().out
    assert "| vamp" in out and "| expost_gmm" in out and "†" not in out


def test_a_mismatched_run_is_refused_with_one_line_per_field(published, capsys):
    other = published / "other"
    assert main(["run", "--remedies", "vamp", "--latents", "2", "--out", str(other), "--epochs", "3",
                 "--n-samples", "150", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), str(other)]) == 2
    err = capsys.readouterr().err
    assert "cannot rank" in err and "--allow-mismatch" in err
    assert "\n  epochs: 3 vs 2\n" in err and "latent sizes" not in err and "feature_key" not in err
    # it ends with the board's own command, for this run's remedy on the latent sizes it has
    assert err.strip().splitlines()[-1] == (f"  latentbench run --epochs 2 --n-samples 150 --quiet --remedies vamp "
                                            f"--latents 2 --out {other}-tiny")
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), str(other), "--allow-mismatch"]) == 0
    out = capsys.readouterr().out
    assert "| vamp †" in out and "not comparable and not ranked: epochs: 3 vs 2" in out
    assert "**" not in [line for line in out.splitlines() if line.startswith("| vamp †")][0]


def test_a_run_on_a_subset_of_the_latent_sizes_is_ranked_on_them_and_marked(published, capsys):
    sub = published / "subset"
    assert main(["run", "--remedies", "vamp", "--latents", "4", "--out", str(sub), *TINY]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), str(sub)]) == 0
    out = capsys.readouterr().out
    assert "**compared on z=4 seed 0 only, the cells common to all folders" in out and "| z=2" not in out
    assert "| vamp " in out and "| expost_gmm " in out and "†" not in out


def test_published_plots_show_every_remedy_without_whitespace(published):
    from matplotlib.image import imread

    lb = published / "leaderboards" / "tiny"
    norms = imread(lb / "norms.png")
    assert norms.shape[0] > 350  # two rows of histograms (vae and expost_gmm), not one
    samples = imread(lb / "samples.png")[..., :3]
    assert (samples > 0.99).all(axis=-1).mean() < 0.35  # the tiles fill the figure
    assert (lb / "grids").is_dir() and list((lb / "grids").glob("*.toml"))


def test_publish_refuses_a_folder_with_two_settings(published, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(published / "run", run)
    assert main(["run", "--remedies", "vae", "--latents", "2", "--out", str(run), "--epochs", "3",
                 "--n-samples", "150", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["publish", str(run), "--name", "x", "--dest", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 different settings (epochs 3 vs 2)" in err[0] and not (tmp_path / "lb").exists()


def test_publish_refuses_an_incomplete_run_unless_partial(published, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(published / "run", run)
    victim = sorted((run / "records").glob("vae-4-*.json"))[0]
    victim.unlink()
    assert main(["publish", str(run), "--name", "x", "--dest", str(tmp_path / "lb")]) == 2
    assert "0 failed and 1 missing cells of 4" in capsys.readouterr().err
    assert not (tmp_path / "lb" / "x").exists()
    assert main(["publish", str(run), "--name", "x", "--dest", str(tmp_path / "lb"), "--partial"]) == 0
    readme = (tmp_path / "lb" / "x" / "README.md").read_text()
    assert "**Partial**" in readme and "| missing" in readme.replace("missing  ", "missing")


def test_publish_writes_nothing_without_ok_records_or_a_writable_dest(published, capsys, tmp_path, monkeypatch):
    import errno
    import json
    import os

    run = tmp_path / "run"
    shutil.copytree(published / "run", run)
    for f in (run / "records").glob("*.json"):  # every cell failed
        rec = json.loads(f.read_text())
        f.write_text(json.dumps({**rec, "status": "failed", "error": "boom", "metrics": {}}))
    assert main(["publish", str(run), "--name", "x", "--dest", str(tmp_path / "lb"), "--partial"]) == 2
    assert "no successful records" in capsys.readouterr().err and not (tmp_path / "lb").exists()

    src = published / "run"
    (tmp_path / "file").write_text("")
    assert main(["publish", str(src), "--name", "x", "--dest", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]

    def full(src_file, dst_file, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst_file))

    monkeypatch.setattr(shutil, "copy2", full)  # the disk fills up while the board is copied
    assert main(["publish", str(src), "--name", "x", "--dest", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "free space" in err[0]
    assert not (tmp_path / "lb").exists()  # no half board, no temp folder


def test_html_page_is_self_contained_and_sortable_in_structure(published, tmp_path):
    out = tmp_path / "lb.html"
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), "--format", "html", "--out", str(out),
                 "--plots", str(tmp_path / "plots")]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and '<table class="lb" id="main">' in page
    assert "src=\"data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert "addEventListener('click'" in page and "latentbench run" in page


def _browser():
    from shutil import which

    chrome = which("chromium") or which("chromium-browser") or which("google-chrome")
    driver = which("chromedriver")
    if not chrome or not driver:
        return None, "no Chromium / chromedriver on this machine (apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    return (webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts), "")


def test_clicking_a_header_in_headless_chromium_reorders_rows(published, tmp_path):
    page = tmp_path / "lb.html"
    assert main(["leaderboard", str(published / "leaderboards" / "tiny"), "--format", "html", "--out", str(page)]) == 0
    driver, why = _browser()
    if driver is None:
        pytest.skip(why)
    from selenium.webdriver.common.by import By

    try:
        driver.get(page.resolve().as_uri())

        def column(i):
            return [r.find_elements(By.TAG_NAME, "td")[i].get_attribute("data-v")
                    for r in driver.find_elements(By.CSS_SELECTOR, "#main tbody tr")]

        names = column(0)
        assert names == sorted(names)  # alphabetical to start with
        header = driver.find_elements(By.CSS_SELECTOR, "#main thead th")[1]  # z=2
        header.click()
        asc = [float(v) for v in column(1)]
        assert asc == sorted(asc)
        header.click()
        desc = [float(v) for v in column(1)]
        assert desc == sorted(desc, reverse=True) and column(0) != names[::-1] or desc != asc
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, Path(__file__).parent.parent / ".pytest_cache" / "leaderboard-page.png") \
            if (Path(__file__).parent.parent / ".pytest_cache").is_dir() else None
    finally:
        driver.quit()
