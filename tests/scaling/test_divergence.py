"""scaling.divergence: the rules that stop a run, fed hand-made loss sequences."""

import math

import pytest

from scaling.divergence import (
    DIVERGENCE_NATS,
    DIVERGENCE_PATIENCE,
    START_LOSS_STEPS,
    DivergenceMonitor,
)


def feed(monitor, losses, first_step=1, grad_norm=1.0):
    """(step, divergence) of the first divergence over `losses`, or None."""
    for i, loss in enumerate(losses):
        got = monitor.observe(first_step + i, loss, grad_norm)
        if got is not None:
            return first_step + i, got
    return None


@pytest.mark.parametrize(("loss", "grad_norm"), [(math.nan, 1.0), (math.inf, 1.0), (3.0, math.nan),
                                                 (3.0, -math.inf)])
def test_non_finite_loss_or_grad_norm_diverges_at_once(loss, grad_norm):
    monitor = DivergenceMonitor(n_steps=100)
    assert feed(monitor, [3.0, 3.0]) is None
    got = monitor.observe(3, loss, grad_norm)
    assert got.step == 3
    assert got.reason.startswith("non-finite loss") and "at step 3" in got.reason
    # before the start loss is known too: the very first step can diverge
    assert DivergenceMonitor(n_steps=100).observe(1, loss, grad_norm).step == 1


def test_start_loss_is_the_mean_of_the_first_steps():
    monitor = DivergenceMonitor(n_steps=100)
    firsts = [4.0, 3.0, 5.0, 2.0, 6.0][:START_LOSS_STEPS]
    feed(monitor, firsts[:-1])
    assert monitor.start_loss is None
    feed(monitor, firsts[-1:])
    assert monitor.start_loss == pytest.approx(sum(firsts) / len(firsts))
    # a run shorter than START_LOSS_STEPS takes its start from all its steps
    short = DivergenceMonitor(n_steps=2)
    feed(short, [1.0, 3.0])
    assert short.start_loss == pytest.approx(2.0)


def test_a_loss_spike_for_patience_steps_diverges_at_the_last_of_them():
    monitor = DivergenceMonitor(n_steps=100)
    feed(monitor, [4.0] * START_LOSS_STEPS)  # start loss 4
    high = 4.0 + DIVERGENCE_NATS + 0.5
    step, got = feed(monitor, [high] * (DIVERGENCE_PATIENCE + 5), first_step=START_LOSS_STEPS + 1)
    assert step == START_LOSS_STEPS + DIVERGENCE_PATIENCE == got.step
    assert f"loss {high:.3f}" in got.reason and "(4.000)" in got.reason
    assert got.reason.endswith(f"at step {step}")


def test_a_spike_that_recovers_resets_the_count_and_the_threshold_is_strict():
    monitor = DivergenceMonitor(n_steps=1000)
    feed(monitor, [4.0] * START_LOSS_STEPS)
    high = 4.0 + DIVERGENCE_NATS + 1.0
    almost = [high] * (DIVERGENCE_PATIENCE - 1)
    # patience - 1 high steps, one normal step, again and again: never a divergence
    assert feed(monitor, (almost + [4.0]) * 5, first_step=6) is None
    # exactly start + DIVERGENCE_NATS is not "above"
    assert feed(monitor, [4.0 + DIVERGENCE_NATS] * 3 * DIVERGENCE_PATIENCE, first_step=100) is None
    assert monitor.over_count == 0


def test_a_monitor_resumed_from_its_meta_decides_as_an_uninterrupted_one():
    losses = [4.0, 4.1, 3.9, 4.0, 4.0] + [7.0] * 4 + [4.0] + [7.5] * 20
    whole = feed(DivergenceMonitor(n_steps=100), losses)
    for cut in (2, 5, 8, 12):
        before = DivergenceMonitor(n_steps=100)
        assert feed(before, losses[:cut]) is None
        after = DivergenceMonitor.from_meta(before.to_meta(), n_steps=100)
        assert feed(after, losses[cut:], first_step=cut + 1) == whole
    assert whole[0] == 10 + DIVERGENCE_PATIENCE
    # the meta of a run that started before any divergence state existed: fresh counters
    assert DivergenceMonitor.from_meta({}, n_steps=7) == DivergenceMonitor(n_steps=7)
