"""`diagnose`'s verdict on known answers: metric dicts shaped like scorer-v4 records, one per picture,
at a small (D = 8) and a large (D = 4096) latent."""

import math

import pytest

from latentbench.report.verdict import summary_markdown, verdict


def record(d, **changes):
    """The figures of a matched cell at latent size d (2000 samples per set), with ``changes``:
    metrics by name, notes as ``notes={...}``, a metric removed by giving None."""
    width = 1 / math.sqrt(2 * d)  # std of ||z|| / sqrt(D) for N(0, I)
    r = min(16, d // 2)
    m = {"fid_prior_post": 1.2, "fid_floor": 1.0, "fid_post": 2.0, "hole_fraction": 0.011, "sub_hole_fraction": 0.009,
         "spec_wide": 1.08, "spec_narrow": 1.07, "sub_spread": 1.05, "mean_offset": 0.02, "mmd_latent": 1e-4,
         "norm_prior": 1.0, "norm_prior_std": width, "norm_post": 1.001, "norm_post_std": width,
         "sub_dims": min(d, 10), "active_units": min(d, 10), "kl": 25.0,
         # bounds, saturated as on every published board: never read by the verdict
         "mutual_info": 9.2, "marginal_kl": 15.8, "sub_marginal_kl": 12.0}
    notes = {"scorer_version": 4, "n_mixture": 10000, "mi_saturated": True,
             "floors": {"hole_fraction": 0.0123, "sub_hole_fraction": 0.0123, "spec_wide": 1.2, "spec_narrow": 1.2,
                        "sub_spread": 1.2, "mean_offset": 0.1},
             "spec_var_post": [1.0] * (2 * r), "spec_var_prior": [1.0] * (2 * r),
             "spec_wide_dims": 0, "spec_narrow_dims": 0}
    notes.update(changes.pop("notes", {}))
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m, notes


def spectrum(d, wide=(), narrow=()):
    """Spectrum notes: the listed variance ratios q / p at the top (wide) and bottom (narrow), 1 elsewhere."""
    r = min(16, d // 2)
    top = list(wide) + [1.0] * (r - len(wide))
    bottom = [1 / v for v in narrow] + [1.0] * (r - len(narrow))
    return {"spec_var_post": top + bottom, "spec_var_prior": [1.0] * (2 * r),
            "spec_wide_dims": sum(v > 1.2 for v in wide), "spec_narrow_dims": sum(v > 1.2 for v in narrow)}


@pytest.mark.parametrize("d", [8, 4096])
def test_a_matched_cell_reads_matched_with_or_without_fids(d):
    m, notes = record(d)
    assert verdict(m, d, notes)[0] == "matched"
    m, notes = record(d, fid_prior_post=None, fid_floor=None)
    picture, text = verdict(m, d, notes)
    assert picture == "matched" and "No substantial gap" in text
    # a figure just past its floor, but by no size that matters, is no picture
    m, notes = record(d, fid_prior_post=None, spec_wide=1.25, hole_fraction=0.014)
    assert verdict(m, d, notes)[0] == "matched"


@pytest.mark.parametrize("d", [8, 4096])
def test_pictures_within_the_fid_floor_are_matched_whatever_the_bounds_say(d):
    # the Fashion-MNIST expost_gmm cell at z = 16 that scorer v3 called "holes" (54%)
    m, notes = record(d, fid_prior_post=2.0, fid_floor=2.35, sub_spread=1.06, mutual_info=9.21, marginal_kl=40.0)
    picture, text = verdict(m, d, notes)
    assert picture == "matched" and "2.00 against a noise floor of 2.35" in text
    m, notes = record(d, fid_prior_post=1.4, spec_wide=3.0, notes=spectrum(d, wide=[3.0]))
    picture, text = verdict(m, d, notes)
    assert picture == "matched" and "still differ (spec_wide)" in text


@pytest.mark.parametrize("d", [8, 4096])
def test_a_collapsed_latent_is_collapsed_before_anything_else(d):
    m, notes = record(d, sub_dims=0, active_units=0, fid_prior_post=0.003, hole_fraction=0.9)
    assert verdict(m, d, notes)[0] == "collapsed"
    m, notes = record(d, notes={"collapsed": True, "scorer_version": 3})
    assert verdict(m, d, notes)[0] == "collapsed"


@pytest.mark.parametrize("d", [256, 4096])
def test_an_isotropic_prior_too_wide_reads_shells(d):
    # q = N(0, 0.5 I): prior samples on the sphere of radius 1, posterior samples on radius 0.71
    width = 1 / math.sqrt(2 * d)
    m, notes = record(d, fid_prior_post=60.0, norm_post=math.sqrt(0.5), norm_post_std=width * math.sqrt(0.5),
                      hole_fraction=1.0, spec_narrow=2.0, notes=spectrum(d, narrow=[2.0] * 16))
    picture, text = verdict(m, d, notes)
    assert picture == "shells" and "different spheres" in text and "fid_prior_post 60.00" in text


@pytest.mark.parametrize("d", [8, 512])
def test_holes_in_the_full_space_read_holes(d):
    # separated posterior modes under a smooth prior: the prior's samples fall between them
    m, notes = record(d, fid_prior_post=30.0, hole_fraction=0.7, sub_hole_fraction=0.6, sub_spread=1.3)
    picture, text = verdict(m, d, notes)
    assert picture == "holes" and "70% of prior samples" in text


def test_a_mismatch_along_a_few_directions_of_a_large_latent_reads_low_rank():
    d = 4096  # the seed's picture: information in 3 directions, the prior 354x too narrow along one
    m, notes = record(d, fid_prior_post=280.0, hole_fraction=0.025, spec_wide=354.0, sub_spread=354.0, sub_dims=3,
                      notes=spectrum(d, wide=[354.0, 40.0, 9.0]))
    picture, text = verdict(m, d, notes)
    assert picture == "low_rank" and "along 3 of the D = 4096 directions" in text and "spec_wide 354.00" in text
    # the same directions widen the posterior's shell (sqrt(1 + 400 / 4096) = 1.05): still theirs, not shells
    m["norm_post"] = math.sqrt(1 + 400 / d)
    assert verdict(m, d, notes)[0] == "low_rank"
    # a prior too wide along a few directions (the other end of the spectrum), and a mean offset
    m, notes = record(d, fid_prior_post=40.0, spec_narrow=4.0, notes=spectrum(d, narrow=[4.0, 3.0]))
    assert verdict(m, d, notes)[0] == "low_rank"
    m, notes = record(d, fid_prior_post=40.0, mean_offset=2.0)
    picture, text = verdict(m, d, notes)
    assert picture == "low_rank" and "mean_offset 2.00 (floor 0.100)" in text


def test_a_mismatch_along_one_direction_of_a_small_latent_reads_low_rank():
    d = 8
    m, notes = record(d, fid_prior_post=12.0, spec_wide=4.0, sub_spread=4.0, notes=spectrum(d, wide=[4.0]))
    assert verdict(m, d, notes)[0] == "low_rank"


def test_a_prior_too_narrow_along_every_direction_of_a_small_latent_reads_mismatch():
    d = 8  # Var_q = 2 everywhere: shells overlap at D = 8 and no prior sample is a hole
    m, notes = record(d, fid_prior_post=15.0, spec_wide=2.0, sub_spread=2.0, hole_fraction=0.0,
                      norm_post=math.sqrt(2), norm_post_std=math.sqrt(2) / 4, notes=spectrum(d, wide=[2.0] * 4))
    notes["spec_wide_dims"] = 8
    picture, text = verdict(m, d, notes)
    assert picture == "mismatch" and "many directions" in text
    m, notes = record(d, fid_prior_post=15.0)  # an image gap that no latent figure shows
    assert verdict(m, d, notes)[0] == "mismatch"


def test_scorer_v3_figures_are_not_decided():
    m, notes = record(32, hole_fraction=0.998, notes={"scorer_version": 3, "floors": {}})
    picture, text = verdict(m, 32, notes)
    assert picture == "uncalibrated" and "re-score" in text


def test_the_summary_table_has_one_row_per_record_and_counts_the_pictures():
    rows = []
    for remedy, latent, changes in (("vae", "4096", dict(fid_prior_post=280.0, spec_wide=354.0,
                                                         notes=spectrum(4096, wide=[354.0]))),
                                    ("expost_gmm", "4096", {}), ("vae", "8", dict(sub_dims=0)),
                                    ("vae", "32", dict(fid_prior_post=-0.0001))):
        m, notes = record(int(latent), **changes)
        rows.append(({"remedy": remedy, "latent": latent, "seed": 0}, m, notes))
    text = summary_markdown(rows)
    assert "4 records: collapsed 1, matched 2, low_rank 1." in text
    assert "| vae | 4096 | 0 | **low_rank** | 280.00 (1.00) | 0.011 (0.012) |" in text
    assert "| vae | 32 | 0 | **matched** | 0.00 (1.00) |" in text and "-0.00" not in text
    assert text.index("| vae | 8 ") < text.index("| vae | 32 ") < text.index("| vae | 4096 ")


def test_an_image_gap_carried_by_the_subspace_reads_low_rank_despite_a_diffuse_full_space_difference():
    """The figures of the published Fashion-MNIST VAE at latent 4096 (MLP): the calibrated hole_fraction
    reads 0.978 because the posterior shell is 2% smaller over 4085 unused directions, but the swaps place
    the image gap in the 11 informative directions (fid_swap_sub 3.1 against a floor of 1.85; the same
    swap in a random 11-D subspace 275): low_rank, with the full-space difference named."""
    m, notes = record(4096, fid_prior_post=290.6, fid_floor=1.85, hole_fraction=0.978, spec_wide=68.8,
                      spec_narrow=1.59, sub_spread=69.7, sub_dims=11, norm_prior=1.000, norm_post=0.979,
                      norm_prior_std=0.011, norm_post_std=0.018, fid_swap_sub=3.12, fid_swap_sub_rand=274.9,
                      notes={"spec_var_post": [68.8] + [1.0] * 31, "spec_var_prior": [1.0] * 32,
                             "spec_wide_dims": 11, "spec_narrow_dims": 2, "floors": {
                                 "hole_fraction": 0.023, "sub_hole_fraction": 0.023, "spec_wide": 1.2,
                                 "spec_narrow": 1.2, "sub_spread": 1.2, "mean_offset": 0.3}})
    picture, text = verdict(m, 4096, notes)
    assert picture == "low_rank" and "hole_fraction" in text and "fid_swap_sub_rand" in text
    # without the random-subspace control's contrast the intervention proves nothing: holes again
    m["fid_swap_sub_rand"] = 10.0
    assert verdict(m, 4096, notes)[0] == "holes"
