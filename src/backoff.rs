//! Pure backoff arithmetic: exponential growth with full jitter, capped, and `Retry-After` honoured.

/// The longest delay a scheduler's `Retry-After` (or `RateLimit-Reset`) can impose: one hour.
/// A scheduler that asks for longer is asked again after an hour; an unbounded value would
/// park a run for ever (or overflow the clock arithmetic of its next attempt).
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// The delay before retry number `failures` (1 for the first retry), with full jitter.
///
/// `jitter` is a uniform sample from `[0, 1)` supplied by the caller so that the function stays
/// pure and testable. The result lies in `[0, min(max, initial × 2^(failures-1))]`; a
/// `retry_after_ms` from the scheduler is a floor (never retry earlier than it asked), itself
/// capped at [`MAX_RETRY_AFTER_MS`].
pub fn delay_ms(
    failures: u32,
    initial_ms: u64,
    max_ms: u64,
    jitter: f64,
    retry_after_ms: Option<u64>,
) -> u64 {
    let exponent = failures.saturating_sub(1).min(32);
    let ceiling = initial_ms
        .saturating_mul(1u64 << exponent)
        .min(max_ms.max(initial_ms));
    let jitter = jitter.clamp(0.0, 1.0);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "the product lies in [0, ceiling], which fits in u64"
    )]
    // The float product can round above the ceiling for ceilings beyond 2^53.
    let jittered = ((ceiling as f64 * jitter) as u64).min(ceiling);
    match retry_after_ms {
        Some(floor) => jittered.max(floor.min(MAX_RETRY_AFTER_MS)),
        None => jittered,
    }
}

/// Spreads a base interval by ±10% so that many runs started together do not poll in lockstep.
pub fn spread_ms(base_ms: u64, jitter: f64) -> u64 {
    let jitter = jitter.clamp(0.0, 1.0);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "the factor lies in [0.9, 1.1]; the result fits in u64 for any sane interval"
    )]
    let spread = (base_ms as f64 * (0.9 + 0.2 * jitter)) as u64;
    spread.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let ceilings: Vec<u64> = (1..=8)
            .map(|n| delay_ms(n, 100, 5_000, 1.0, None))
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(delay_ms(3, 100, 5_000, 0.0, None), 0);
        assert_eq!(delay_ms(3, 100, 5_000, 0.5, None), 200);
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(delay_ms(1, 100, 5_000, 0.0, Some(3_000)), 3_000);
        assert_eq!(delay_ms(8, 100, 5_000, 1.0, Some(3_000)), 5_000);
    }

    #[test]
    fn a_huge_retry_after_is_capped_at_an_hour() {
        assert_eq!(
            delay_ms(1, 100, 5_000, 0.0, Some(u64::MAX)),
            MAX_RETRY_AFTER_MS
        );
        assert_eq!(delay_ms(1, 100, 5_000, 0.0, Some(7_000)), 7_000);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        assert_eq!(
            delay_ms(u32::MAX, u64::MAX / 2, u64::MAX, 1.0, None),
            u64::MAX
        );
    }

    #[test]
    fn spread_stays_within_ten_percent() {
        assert_eq!(spread_ms(1_000, 0.0), 900);
        assert_eq!(spread_ms(1_000, 1.0), 1_100);
        assert_eq!(spread_ms(0, 0.5), 1);
    }
}
