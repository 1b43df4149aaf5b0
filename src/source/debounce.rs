//! The one batching policy of every source: a burst of edits becomes one rebuild, and a
//! credential change never waits behind it.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A batch is taken once the input has been quiet this long…
pub const QUIET: Duration = Duration::from_millis(100);
/// …or at the latest this long after its first change, so a steady trickle cannot starve it.
pub const MAX: Duration = Duration::from_secs(1);

/// How a source's change is batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Not relevant to the snapshot (another file in a watched directory).
    Ignore,
    /// A configuration edit: wait for the burst to end.
    Batch,
    /// A credential change (a Secret): rebuild at once, taking any pending edits along.
    Now,
}

/// Waits for the next batch of changes from `changes` and returns once it is due; every
/// change queued at that moment is consumed with it, since a rebuild reads the whole input.
/// `None` once the channel is closed.
pub async fn next_batch<T>(
    changes: &mut mpsc::UnboundedReceiver<T>,
    mut urgency: impl FnMut(&T) -> Urgency,
) -> Option<()> {
    loop {
        match urgency(&changes.recv().await?) {
            Urgency::Ignore => continue,
            Urgency::Now => return batch_taken(changes),
            Urgency::Batch => break,
        }
    }
    let max = Instant::now() + MAX;
    let mut quiet = Instant::now() + QUIET;
    loop {
        match tokio::time::timeout_at(quiet.min(max), changes.recv()).await {
            Err(_elapsed) => return batch_taken(changes),
            // Closed mid-burst: the pending edits still deserve their rebuild.
            Ok(None) => return Some(()),
            Ok(Some(change)) => match urgency(&change) {
                Urgency::Ignore => {}
                Urgency::Batch => quiet = Instant::now() + QUIET,
                Urgency::Now => return batch_taken(changes),
            },
        }
    }
}

fn batch_taken<T>(changes: &mut mpsc::UnboundedReceiver<T>) -> Option<()> {
    while changes.try_recv().is_ok() {}
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urgency(c: &char) -> Urgency {
        match c {
            'i' => Urgency::Ignore,
            'b' => Urgency::Batch,
            _ => Urgency::Now,
        }
    }

    /// Runs `next_batch` on a channel fed by `feed` (offsets from the start, in ms) and
    /// returns when, in ms after the start, the batch was taken.
    async fn taken_at(feed: &[(u64, char)]) -> Option<u64> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let feed = feed.to_vec();
        tokio::spawn(async move {
            for (at, c) in feed {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                if tx.send(c).is_err() {
                    return;
                }
            }
            // Keep the channel open: closing it would end the batch early.
            std::future::pending::<()>().await;
        });
        next_batch(&mut rx, urgency).await?;
        Some(start.elapsed().as_millis() as u64)
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_period_ends_a_burst() {
        // Edits 50 ms apart keep the batch open; it closes 100 ms after the last one.
        assert_eq!(
            taken_at(&[(0, 'b'), (50, 'b'), (100, 'b')]).await,
            Some(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_cut_at_the_maximum() {
        let feed: Vec<(u64, char)> = (0..100).map(|i| (i * 50, 'b')).collect();
        assert_eq!(taken_at(&feed).await, Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_credential_change_does_not_wait() {
        assert_eq!(taken_at(&[(0, 'n')]).await, Some(0));
        // …and cuts a pending burst short.
        assert_eq!(taken_at(&[(0, 'b'), (30, 'n')]).await, Some(30));
    }

    #[tokio::test(start_paused = true)]
    async fn irrelevant_changes_neither_start_nor_extend_a_batch() {
        assert_eq!(taken_at(&[(0, 'i'), (500, 'b')]).await, Some(600));
        assert_eq!(
            taken_at(&[(0, 'b'), (60, 'i'), (120, 'i')]).await,
            Some(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queued_changes_are_consumed_with_the_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for c in ['b', 'b', 'n', 'b', 'b'] {
            tx.send(c).unwrap();
        }
        next_batch(&mut rx, urgency).await.unwrap();
        assert!(rx.try_recv().is_err(), "the batch left changes behind");
        drop(tx);
        assert_eq!(next_batch(&mut rx, urgency).await, None);
    }
}
