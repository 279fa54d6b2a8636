"""trust.py: the noise floor, the keep threshold, screening, confirmation and quarantine, as numbers.

The last tests simulate whole nights with these rules (the same order the loop asks them in) to
measure how often pure noise gets a change kept, and how often a real improvement does.
"""

from __future__ import annotations

import math
import random

import pytest

from autoresearch import trust


def test_seeds_differ_from_the_run_seed_and_from_each_other() -> None:
    assert trust.noise_seeds(42, 2) == [43, 44]
    assert trust.noise_seeds(42, 0) == []
    confirmations = trust.confirmation_seeds(42, trial=7, count=2)
    assert confirmations == [1049, 2049]
    assert trust.confirmation_seeds(42, trial=8, count=1) != trust.confirmation_seeds(42, trial=7, count=1)
    assert not set(confirmations) & set(trust.noise_seeds(42, 50))


def test_sample_std() -> None:
    assert trust.sample_std([1.0]) is None
    assert trust.sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2))
    assert trust.sample_std([10.0, 10.0, 13.0]) == pytest.approx(math.sqrt(3))


def test_keep_threshold_is_the_larger_of_min_delta_and_k_sigma() -> None:
    noise = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.0)
    assert noise.value == pytest.approx(0.002)
    assert noise.words == "keep threshold 0.002000 = 2 x noise std 0.001000 (2 degrees of freedom)"
    floor = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.005)
    assert floor.value == 0.005 and floor.words.startswith("keep threshold 0.005000 = --min-delta")
    unknown = trust.keep_threshold(None, sigmas=2.0, min_delta=0.0)
    assert unknown.value == 0.0 and "any improvement counts" in unknown.words
    assert trust.keep_threshold(None, sigmas=2.0, min_delta=0.01).value == 0.01


def test_screen_needs_more_than_the_threshold() -> None:
    threshold = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.0)
    passed = trust.screen(0.990, 1.000, threshold, "the baseline's mean over 3 seeds")
    assert passed.candidate and passed.gain == pytest.approx(0.01)
    assert passed.reason.startswith("0.990000 beats the baseline's mean over 3 seeds 1.000000 by 0.010000")
    short = trust.screen(0.9985, 1.000, threshold, "the baseline")
    assert not short.candidate and "does not beat the baseline 1.000000 by more than the keep threshold" in short.reason
    assert not trust.screen(1.0, 1.0, trust.keep_threshold(None, sigmas=2, min_delta=0), "b").candidate


def test_confirmation_needs_the_mean_and_every_run() -> None:
    threshold = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.0)  # 0.002
    status, why = trust.confirm([(42, 0.990), (1049, 0.992)], 1.0, threshold)
    assert status == trust.KEEP and why.startswith("confirmed: the mean 0.991000 of 2 seeds")
    status, why = trust.confirm([(42, 0.990), (1049, 1.001)], 1.0, threshold)  # mean 0.9955 clears, seed 1049 not
    assert status == trust.DISCARD and why.startswith("not confirmed: seed 1049 scored 1.001000")
    status, why = trust.confirm([(42, 0.990), (1049, 1.020)], 1.0, threshold)
    assert status == trust.DISCARD and why.startswith("not confirmed: the mean 1.005000 of 2 seeds")
    with pytest.raises(ValueError):
        trust.confirm([(42, 0.9)], 1.0, threshold)


def test_quarantine_and_what_repeating_means() -> None:
    threshold = trust.keep_threshold(0.001, 2, sigmas=2.0, min_delta=0.0)  # 0.002
    assert trust.quarantine(0.015, 0.004, threshold, factor=10, floor=0.01) is None  # under 10 x 0.004
    why = trust.quarantine(0.05, 0.004, threshold, factor=10, floor=0.01)
    assert why.startswith("quarantined: a gain of 0.050000 is more than 10 x the largest gain kept so far (0.004000)")
    assert trust.quarantine(0.008, None, threshold, factor=3, floor=0.01) is None  # under the floor
    assert "nothing kept yet" in trust.quarantine(0.05, None, threshold, factor=10, floor=0.01)
    assert trust.quarantine(5.0, 0.001, threshold, factor=0, floor=0.01) is None  # factor 0: off
    # a quarantined gain of 0.05 that another seed repeats only as 0.01 is not confirmed
    status, why = trust.confirm([(42, 0.95), (1049, 0.99)], 1.0, threshold, quarantined=True)
    assert status == trust.DISCARD and "did not repeat" in why
    assert trust.confirm([(42, 0.95), (1049, 0.97)], 1.0, threshold, quarantined=True)[0] == trust.KEEP
    assert trust.confirm([(42, 0.95), (1049, 0.99)], 1.0, threshold, quarantined=False)[0] == trust.KEEP


def test_the_noise_floor_record_has_what_the_report_reads() -> None:
    threshold = trust.keep_threshold(0.0012, 2, sigmas=2.0, min_delta=0.0)
    record = trust.noise_floor_record([42, 43, 44], [1.0, 1.0012, 0.9991], threshold)
    assert record["seeds"] == [42, 43, 44] and record["val_bpbs"] == [1.0, 1.0012, 0.9991]
    assert record["std"] == 0.0012 and record["keep_threshold"] == pytest.approx(0.0024) and record["dof"] == 2
    assert record["mean"] == pytest.approx(1.0001)
    assert record["method"].startswith("sample std (ddof=1) of val_bpb over 3 seeds of the unmodified baseline")


# --- Whole nights, simulated with the rules in the loop's order ---------------------------------------


def simulate_night(rng: random.Random, *, trials: int, effect: float = 0.0, noise_runs: int = 2,
                   confirm_runs: int = 1, sigmas: float = 2.0, sigma: float = 1.0,
                   quarantine_factor: float = 10.0) -> int:
    """Keeps in one night where every proposal improves the true score by `effect` (0: pure noise)."""
    groups = {"baseline": [rng.gauss(0.0, sigma) for _ in range(1 + noise_runs)]}
    threshold = trust.keep_threshold(trust.sample_std(groups["baseline"]), noise_runs, sigmas=sigmas, min_delta=0.0)
    best, truth, keeps, largest = "baseline", 0.0, 0, None
    for trial in range(trials):
        reference = trust.mean(groups[best])
        mu = truth - effect
        first = rng.gauss(mu, sigma)
        screened = trust.screen(first, reference, threshold, "the best")
        if not screened.candidate:
            continue
        # the floor at 10 sigma: 0.01 bpb against a run-to-run std of about 0.001 on a GPU
        quarantined = trust.quarantine(screened.gain, largest, threshold, factor=quarantine_factor, floor=10 * sigma)
        count = max(confirm_runs, 1 if quarantined else 0)
        runs = [(0, first)] + [(seed, rng.gauss(mu, sigma)) for seed in range(1, count + 1)]
        if count:
            status, _ = trust.confirm(runs, reference, threshold, quarantined=bool(quarantined))
        else:
            status = trust.KEEP
        groups[f"trial {trial}"] = [score for _, score in runs]
        if status == trust.KEEP:
            keeps += 1
            gain = reference - trust.mean(groups[f"trial {trial}"])
            largest = gain if largest is None else max(largest, gain)
            best, truth = f"trial {trial}", mu
    return keeps


def false_keep_rate(**settings) -> float:
    rng = random.Random(2024)
    nights = 600
    return sum(simulate_night(rng, trials=30, **settings) > 0 for _ in range(nights)) / nights


def test_pure_noise_rarely_gets_a_keep_and_confirmation_is_what_does_it() -> None:
    with_rules = false_keep_rate()
    without_confirmation = false_keep_rate(confirm_runs=0)
    # the reference's rule: keep any improvement
    without_anything = false_keep_rate(noise_runs=0, confirm_runs=0, quarantine_factor=0)
    print(f"nights of 30 pure-noise proposals with a keep: rules {with_rules:.3f}, no confirmation "
          f"{without_confirmation:.3f}, no noise floor and no confirmation {without_anything:.3f}")
    assert without_anything > 0.9  # keep-any-improvement keeps noise almost every night
    assert without_confirmation > 0.3
    assert with_rules < 0.35 and with_rules < without_confirmation / 2
    assert false_keep_rate(noise_runs=6) < with_rules  # more seeds, a better std, fewer false keeps


def test_a_real_improvement_of_four_sigma_is_usually_kept() -> None:
    rng = random.Random(7)
    kept = sum(simulate_night(rng, trials=1, effect=4.0) for _ in range(600)) / 600
    assert kept > 0.8


# --- Start-up: cold and warm references, the tolerance, the allowance -----------------------------

BASE_SOURCE = 'DEPTH = 8\nMATRIX_LR = 0.04\nWINDOW_PATTERN = "SSSL"\n\ndef model():\n    return DEPTH * 2\n'


def test_a_changed_shape_or_changed_code_compiles_cold_other_knobs_do_not() -> None:
    assert not trust.compiles_cold(BASE_SOURCE, BASE_SOURCE)
    assert not trust.compiles_cold(BASE_SOURCE, BASE_SOURCE.replace("0.04", "0.03"))  # a learning rate
    assert trust.compiles_cold(BASE_SOURCE, BASE_SOURCE.replace("DEPTH = 8", "DEPTH = 12"))
    assert trust.compiles_cold(BASE_SOURCE, BASE_SOURCE.replace('"SSSL"', '"L"'))
    assert trust.compiles_cold(BASE_SOURCE, BASE_SOURCE.replace("DEPTH * 2", "DEPTH * 3"))  # code
    # a learning rate AND code: still cold
    both = BASE_SOURCE.replace("0.04", "0.03").replace("DEPTH * 2", "DEPTH + 1")
    assert trust.compiles_cold(BASE_SOURCE, both)
    assert trust.compiles_cold(BASE_SOURCE, BASE_SOURCE + "NEW_KNOB = 1\n")


def test_a_cold_trial_is_compared_with_the_cold_start_up_and_a_warm_one_with_the_warm() -> None:
    cold = trust.startup_rule(cold_startup=60.0, warm_startups=[8.0, 9.0, 10.0], cold=True, tolerance=None)
    assert cold.cold and cold.reference == 60.0
    assert cold.tolerance == 30.0  # 0.5 x 60 s is the largest of 5 s, 4 x std (4.0 s) and 30 s
    assert cold.allowed == 90.0 and "cold start-up of 60.0 s" in cold.words and "0.5 x the cold" in cold.words
    warm = trust.startup_rule(cold_startup=60.0, warm_startups=[8.0, 9.0, 10.0], cold=False, tolerance=None)
    assert not warm.cold and warm.reference == 10.0  # the slowest warm start
    assert warm.tolerance == 5.0 and warm.allowed == 15.0  # 4 x std 1.0 = 4 s < the 5 s floor
    noisy = trust.startup_rule(cold_startup=60.0, warm_startups=[8.0, 12.0, 16.0], cold=False, tolerance=None)
    assert noisy.tolerance == pytest.approx(16.0) and "4 x start-up std 4.00 s" in noisy.words


def test_without_warm_runs_the_cold_figure_is_the_reference_and_a_given_tolerance_wins() -> None:
    rule = trust.startup_rule(cold_startup=20.0, warm_startups=[], cold=False, tolerance=None)
    assert rule.reference == 20.0 and rule.tolerance == 5.0
    given = trust.startup_rule(cold_startup=20.0, warm_startups=[3.0], cold=False, tolerance=1.5)
    assert (given.reference, given.tolerance) == (3.0, 1.5)
    assert "the tolerance is 1.5 s (--overhead-tolerance)" in given.words


def test_the_start_up_allowance_follows_the_cold_start_up() -> None:
    assert trust.startup_allowance(None, None) == trust.BASELINE_STARTUP_ALLOWANCE == 600.0
    assert trust.startup_allowance(None, 5.0) == 60.0
    assert trust.startup_allowance(None, 100.0) == 300.0
    assert trust.startup_allowance(45.0, 100.0) == 45.0  # --startup-allowance, as given
