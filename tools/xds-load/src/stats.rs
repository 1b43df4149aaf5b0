//! Percentiles over measured durations.

use serde::Serialize;
use std::time::Duration;

/// p50 / p99 / max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The nearest-rank `p`th percentile (0 < p ≤ 100) of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The spread of `values`; `None` when there are none.
pub fn spread(values: &mut [Duration]) -> Option<Spread> {
    values.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Some(Spread {
        p50_ms: ms(percentile(values, 50.0)?),
        p99_ms: ms(percentile(values, 99.0)?),
        max_ms: ms(*values.last()?),
    })
}

/// The mean of `values`, 0 when there are none.
pub fn mean(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(ms(50)));
        assert_eq!(percentile(&hundred, 99.0), Some(ms(99)));
        assert_eq!(percentile(&hundred, 100.0), Some(ms(100)));
        let thousand: Vec<Duration> = (1..=1000).map(ms).collect();
        assert_eq!(percentile(&thousand, 99.0), Some(ms(990)));
        assert_eq!(percentile(&[ms(7)], 50.0), Some(ms(7)));
        assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(percentile(&[ms(1), ms(2)], 50.0), Some(ms(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn spread_sorts_its_input() {
        let mut values = vec![ms(30), ms(10), ms(20)];
        let s = spread(&mut values).unwrap();
        assert_eq!(
            s,
            Spread {
                p50_ms: 20.0,
                p99_ms: 30.0,
                max_ms: 30.0
            }
        );
        assert_eq!(spread(&mut []), None);
    }

    #[test]
    fn mean_of_nothing_is_zero() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(mean(&[1, 2, 6]), 3.0);
    }
}
