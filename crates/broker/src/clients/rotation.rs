//! Round robin over the instances of one downstream (the loggers' RPC or
//! HTTP doors), skipping for a short back-off an instance whose last call or
//! connect failed.
//!
//! An ejected instance is not written off: once its back-off has passed,
//! the next pick that reaches it in turn makes one call to it, a trial,
//! while the others still skip it (a logger that accepts connections but
//! never answers would otherwise take a share of every request until the
//! first of them timed out). An answer puts it back for good; a failure
//! ejects it again, for longer: the back-off doubles with each failure in a
//! row (250 ms up to 5 s), so a logger that is gone costs a call now and
//! then, not one in every `n`. When every instance is ejected the one whose
//! back-off ends first is tried anyway: a request should meet its own
//! failure, not a refusal made up from earlier ones.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The first back-off after a failure; doubled for each further one in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off: a logger that came back is used again within this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The instances of one downstream, in the order they were configured.
#[derive(Debug)]
pub struct Rotation<T> {
    members: Vec<Member<T>>,
    next: AtomicUsize,
    /// How long a trial call may take (the calls' deadline): the member
    /// stays ejected for the others meanwhile.
    trial: Duration,
    /// What the members' `ejected_until` count from (atomics hold no `Instant`).
    origin: Instant,
}

#[derive(Debug)]
struct Member<T> {
    value: T,
    /// Milliseconds after `origin` until which the member is skipped; 0: never ejected.
    ejected_until: AtomicU64,
    /// Failures since the last success, for the back-off's length.
    failures: AtomicU32,
}

impl<T> Rotation<T> {
    /// A rotation over `values` whose calls take at most `deadline`; `None`
    /// if there are none.
    pub fn new(values: Vec<T>, deadline: Duration) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        Some(Self {
            members: values
                .into_iter()
                .map(|value| Member {
                    value,
                    ejected_until: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            trial: deadline,
            origin: Instant::now(),
        })
    }

    /// How many members there are (at least one).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The member at `index` (an index [`Self::pick`] returned).
    pub fn get(&self, index: usize) -> &T {
        &self.members[index % self.members.len()].value
    }

    /// Every member, in the configured order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.members.iter().map(|member| &member.value)
    }

    /// The index of the next member in turn that is not ejected, other than
    /// `not` (the one a retry just failed on) when there is another.
    pub fn pick(&self, not: Option<usize>) -> usize {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let eligible = |index: usize| n == 1 || Some(index) != not;
        let mut soonest: Option<(u64, usize)> = None;
        for step in 0..n {
            let index = start.wrapping_add(step) % n;
            if !eligible(index) {
                continue;
            }
            let member = &self.members[index];
            let until = member.ejected_until.load(Ordering::Relaxed);
            if until == 0 {
                return index;
            }
            // The back-off has passed: this call is the trial, if no other
            // call claimed it first; until it ends the others skip the member.
            if until <= now
                && member
                    .ejected_until
                    .compare_exchange(
                        until,
                        now.saturating_add(millis(self.trial)).max(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return index;
            }
            if soonest.is_none_or(|(best, _)| until < best) {
                soonest = Some((until, index));
            }
        }
        soonest.map_or(start % n, |(_, index)| index)
    }

    /// The member's call or connect failed: skip it for a back-off.
    pub fn failed(&self, index: usize) {
        let member = &self.members[index % self.members.len()];
        let failures = member.failures.fetch_add(1, Ordering::Relaxed);
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << failures.min(5))
            .min(MAX_BACKOFF);
        let until = self.now_ms().saturating_add(millis(backoff)).max(1);
        member.ejected_until.store(until, Ordering::Relaxed);
    }

    /// The member answered: it is in the rotation again, its back-off reset.
    /// (A call picked before the member was ejected may answer after; it
    /// shows the member works, so it counts like the trial's answer.)
    pub fn succeeded(&self, index: usize) {
        let member = &self.members[index % self.members.len()];
        // Two loads, no stores, on the usual path: nothing is ejected.
        if member.failures.load(Ordering::Relaxed) != 0
            || member.ejected_until.load(Ordering::Relaxed) != 0
        {
            member.failures.store(0, Ordering::Relaxed);
            member.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the member is being skipped now.
    pub fn is_ejected(&self, index: usize) -> bool {
        self.members[index % self.members.len()]
            .ejected_until
            .load(Ordering::Relaxed)
            > self.now_ms()
    }

    fn now_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Splits a list setting (`a, b c`) into its items, in order, without
/// empty ones and without repeating one.
pub fn list_items(value: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for item in value.split([',', ' ', '\t', '\n']).map(str::trim) {
        if !item.is_empty() && !items.iter().any(|known| known == item) {
            items.push(item.to_owned());
        }
    }
    items
}

/// The single-address setting's value followed by the list setting's
/// items, each once.
pub fn with_others(first: &str, others: &str) -> Vec<String> {
    let mut all = vec![first.to_owned()];
    for item in list_items(others) {
        if !all.contains(&item) {
            all.push(item);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// A rotation whose clock reads a minute already, so that "until now"
    /// is a time after its start.
    fn aged<T>(mut rotation: Rotation<T>) -> Rotation<T> {
        if let Some(origin) = rotation.origin.checked_sub(Duration::from_secs(60)) {
            rotation.origin = origin;
        }
        rotation
    }

    /// Ends the member's back-off now, as time passing would.
    fn backoff_passed<T>(rotation: &Rotation<T>, index: usize) {
        rotation.members[index]
            .ejected_until
            .store(rotation.now_ms().max(1), Ordering::Relaxed);
    }

    #[test]
    fn after_the_backoff_one_call_tries_the_member_while_the_others_skip_it() {
        let rotation = aged(Rotation::new(vec!["a", "b"], DEADLINE).expect("members"));
        rotation.failed(0);
        backoff_passed(&rotation, 0);
        let picks: Vec<usize> = (0..6).map(|_| rotation.pick(None)).collect();
        assert_eq!(
            picks.iter().filter(|&&index| index == 0).count(),
            1,
            "one trial: {picks:?}"
        );
        // The trial failed: ejected again, for longer.
        rotation.failed(0);
        assert!(rotation.is_ejected(0));
        backoff_passed(&rotation, 0);
        assert!(
            (0..2).map(|_| rotation.pick(None)).any(|index| index == 0),
            "a new trial after the longer back-off"
        );
        rotation.succeeded(0);
        let picks: Vec<usize> = (0..4).map(|_| rotation.pick(None)).collect();
        assert_eq!(picks.iter().filter(|&&index| index == 0).count(), 2);
    }

    #[test]
    fn picks_go_round_and_skip_an_ejected_member_until_its_backoff_passed() {
        let rotation = Rotation::new(vec!["a", "b", "c"], DEADLINE).expect("members");
        let picks: Vec<usize> = (0..6).map(|_| rotation.pick(None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        rotation.failed(1);
        assert!(rotation.is_ejected(1));
        let picks: Vec<usize> = (0..6).map(|_| rotation.pick(None)).collect();
        assert!(!picks.contains(&1), "{picks:?}");

        // Back in the rotation once it answered again.
        rotation.succeeded(1);
        let picks: Vec<usize> = (0..3).map(|_| rotation.pick(None)).collect();
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn a_retry_goes_to_another_member_and_a_lone_member_is_always_tried() {
        let rotation = Rotation::new(vec!["a", "b"], DEADLINE).expect("members");
        for _ in 0..4 {
            let first = rotation.pick(None);
            assert_ne!(rotation.pick(Some(first)), first);
        }
        let lone = Rotation::new(vec!["a"], DEADLINE).expect("member");
        lone.failed(0);
        assert_eq!(lone.pick(Some(0)), 0);
    }

    #[test]
    fn with_every_member_ejected_the_one_back_soonest_is_tried() {
        let rotation = Rotation::new(vec!["a", "b"], DEADLINE).expect("members");
        rotation.failed(0);
        rotation.failed(0); // a longer back-off than b's
        rotation.failed(1);
        for _ in 0..4 {
            assert_eq!(rotation.pick(None), 1);
        }
    }

    #[test]
    fn the_backoff_grows_with_failures_in_a_row_and_is_bounded() {
        let rotation = Rotation::new(vec!["a"], DEADLINE).expect("member");
        let mut last = 0;
        for _ in 0..10 {
            rotation.failed(0);
            let until = rotation.members[0].ejected_until.load(Ordering::Relaxed);
            assert!(until >= last);
            last = until;
        }
        assert!(last <= rotation.now_ms() + millis(MAX_BACKOFF));
    }

    #[test]
    fn list_settings_split_on_commas_and_spaces_and_drop_repeats() {
        assert_eq!(
            list_items(" a:1, b:2  c:3,,a:1 "),
            ["a:1", "b:2", "c:3"].map(String::from)
        );
        assert!(list_items("").is_empty());
        assert_eq!(
            with_others("a:1", "b:2, a:1"),
            ["a:1", "b:2"].map(String::from)
        );
    }
}
