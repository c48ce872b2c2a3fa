import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import ScheduleConfig
from scaling.errors import UserError
from scaling.schedules import (
    branch_schedule,
    decay_start,
    learning_rate,
    schedule_scalars,
    scheduled_lr,
    validate,
)


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Scoped, not global: pytest-xdist runs other modules' tests in this process afterwards.
    with jax.numpy_rank_promotion("raise"):
        yield


def lr(step, sched, n_steps=100, peak=1.0):
    return float(learning_rate(step, peak_lr=peak, n_steps=n_steps, sched=sched))


def test_cosine_hand_values():
    s = ScheduleConfig(kind="cosine", warmup_steps=10, final_lr_frac=0.1)
    # warmup: (s+1)/10 of the peak
    assert lr(0, s, peak=2.0) == pytest.approx(0.2)
    assert lr(4, s, peak=2.0) == pytest.approx(1.0)
    assert lr(9, s, peak=2.0) == pytest.approx(2.0)
    # cosine over the remaining 90 steps: halfway (step 55) is (1 + 0.1) / 2 of the peak
    assert lr(10, s) == pytest.approx(1.0)
    assert lr(55, s) == pytest.approx(0.55, abs=1e-6)
    # at step 40: progress 1/3, 0.1 + 0.9 * 0.5 * (1 + cos(pi/3)) = 0.775
    assert lr(40, s) == pytest.approx(0.775, abs=1e-6)
    assert lr(100, s) == pytest.approx(0.1, abs=1e-7)  # the horizon: exactly 10%
    assert lr(99, s) > 0.1


def test_cosine_horizon_is_the_runs_own():
    s = ScheduleConfig(kind="cosine", warmup_steps=0, final_lr_frac=0.1)
    for n in (10, 1000):
        assert lr(n // 2, s, n_steps=n) == pytest.approx(0.55, abs=1e-6)


def test_constant():
    s = ScheduleConfig(kind="constant", warmup_steps=4)
    assert [lr(i, s, peak=4.0) for i in range(6)] == pytest.approx([1, 2, 3, 4, 4, 4])


def test_wsd_one_minus_sqrt_cooldown():
    s = ScheduleConfig(kind="wsd", warmup_steps=0, decay_frac=0.2)
    assert decay_start(s, 100) == 80
    assert lr(0, s) == 1.0 and lr(79, s) == 1.0 and lr(80, s) == 1.0
    assert lr(85, s) == pytest.approx(1 - math.sqrt(5 / 20), abs=1e-6)  # 0.5
    assert lr(95, s) == pytest.approx(1 - math.sqrt(15 / 20), abs=1e-6)
    assert lr(100, s) == pytest.approx(0.0, abs=1e-7)


def test_wsd_branch_shares_the_stable_prefix():
    stable = ScheduleConfig(kind="constant", warmup_steps=5, decay_frac=0.2)
    for total in (60, 100, 200):
        b = branch_schedule(stable, n_steps=total)
        assert b.stable_steps == int(0.8 * total)
        pre = [lr(i, b, n_steps=total) for i in range(b.stable_steps)]
        assert pre == [lr(i, stable, n_steps=10_000) for i in range(b.stable_steps)]
        assert lr(total, b, n_steps=total) == pytest.approx(0.0, abs=1e-7)
        quarter = b.stable_steps + (total - b.stable_steps) // 4
        assert lr(quarter, b, n_steps=total) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "constant", "wsd"])
def test_traced_scalars_equal_eager_and_share_one_program(kind):
    # The step takes the schedule's numbers as arguments: one compiled function gives every
    # run's learning rates, whatever its length, warmup and peak.
    f = jax.jit(jax.vmap(lambda step, peak, scalars: scheduled_lr(step, kind, peak, scalars),
                         in_axes=(0, None, None)))
    for n_steps, warmup, peak in ((20, 3, 0.01), (1000, 0, 0.3), (7, 7, 1.0)):
        s = ScheduleConfig(kind=kind, warmup_steps=warmup, decay_frac=0.3)
        eager = np.array([lr(i, s, n_steps=n_steps, peak=peak) for i in range(30)], np.float32)
        scalars = {k: jnp.float32(v) for k, v in schedule_scalars(s, n_steps).items()}
        traced = np.asarray(f(jnp.arange(30), jnp.float32(peak), scalars))
        np.testing.assert_allclose(traced, eager, rtol=1e-6)
    assert f._cache_size() == 1


@pytest.mark.parametrize("kwargs", [
    dict(kind="linear"), dict(warmup_steps=200), dict(final_lr_frac=1.5),
    dict(kind="wsd", decay_frac=0.0), dict(kind="wsd", stable_steps=101)])
def test_bad_schedules_name_the_field(kwargs):
    with pytest.raises(UserError, match=r"schedule\."):
        validate(ScheduleConfig(**kwargs), n_steps=100)
