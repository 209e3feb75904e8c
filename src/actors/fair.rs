//! Fair share inside a pool: which queued run gets the next slot.
//!
//! Runs carry a tenant (the value of the pool's tenant label, `""` for runs without it) and a
//! priority. When a slot is free, it goes to the tenant with the fewest runs in flight for its
//! weight (weighted fair share on what each tenant holds now, so a tenant with a burst of
//! 10,000 queued runs and one with 10 hold slots in the ratio of their weights); within a tenant
//! to the highest priority; within a priority to the oldest run. A tenant at its own in-flight
//! cap gets no slot, even a free one.
//!
//! Between tenants that hold equal shares (always the case in a pool of one slot), slots go by
//! stride scheduling: each grant moves its tenant's pass on by `1/weight`, and the lowest pass
//! wins, so equal tenants alternate and a tenant of weight 3 gets three grants for one. A tenant
//! that starts waiting again starts at the pass of the latest grant: idle time banks no credit.
//! Remaining ties go to the tenant whose next run was queued first, so a pool with one tenant
//! is plain priority-FIFO.
//!
//! Pure bookkeeping, no I/O: [`FairQueue`] holds the waiting runs, [`Slots`] the runs holding a
//! slot per tenant; the PoolActor asks [`FairQueue::next`] for each free slot.

use crate::domain::ids::JobId;
use crate::domain::run::Millis;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A tenant's name: the value of the pool's tenant label on a run (`""` when it has none).
pub type Tenant = Arc<str>;

/// The fair-share knobs of a pool (`fairShare` in its manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairShare {
    /// The run label whose value names the tenant (`tenant` by default).
    pub tenant_label: String,
    /// Weight per tenant; tenants not listed weigh [`FairShare::default_weight`].
    pub weights: BTreeMap<String, u32>,
    /// The weight of a tenant not listed (1 by default).
    pub default_weight: u32,
    /// The most slots one tenant may hold at once (none by default: only `maxInFlight`).
    pub max_in_flight_per_tenant: Option<u32>,
}

impl Default for FairShare {
    fn default() -> Self {
        Self {
            tenant_label: "tenant".to_owned(),
            weights: BTreeMap::new(),
            default_weight: 1,
            max_in_flight_per_tenant: None,
        }
    }
}

impl FairShare {
    /// The tenant of a run with these labels.
    pub fn tenant_of(&self, labels: &serde_json::Map<String, serde_json::Value>) -> Tenant {
        match labels.get(&self.tenant_label) {
            Some(serde_json::Value::String(name)) => Arc::from(name.as_str()),
            _ => Arc::from(""),
        }
    }

    fn weight(&self, tenant: &str) -> u64 {
        u64::from(
            self.weights
                .get(tenant)
                .copied()
                .unwrap_or(self.default_weight)
                .max(1),
        )
    }

    /// Whether a tenant holding `held` slots may take one more.
    pub fn admits(&self, held: usize) -> bool {
        self.max_in_flight_per_tenant
            .is_none_or(|cap| held < usize::try_from(cap).unwrap_or(usize::MAX))
    }
}

/// A queued run as the queue keeps it: what ordering, granting and expiring need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The run.
    pub job_id: JobId,
    /// When its deadline passes, if it has one.
    pub deadline_at: Option<Millis>,
    /// Its tenant.
    pub tenant: Tenant,
    /// Its priority (higher first).
    pub priority: i32,
}

impl Waiting {
    /// Whether its deadline has passed at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.deadline_at.is_some_and(|deadline| deadline <= now)
    }
}

/// Order inside a tenant's lane: priority first (higher first), then arrival.
type Key = (Reverse<i32>, i64);

/// How far a grant moves a tenant of weight 1 on; a tenant of weight `w` moves `STRIDE / w`.
const STRIDE: u64 = 1_000_000_000;

/// One tenant's waiting runs and its pass.
#[derive(Debug, Default)]
struct Lane {
    runs: BTreeMap<Key, Waiting>,
    pass: u64,
}

/// The runs waiting for a slot, per tenant.
#[derive(Debug, Default)]
pub struct FairQueue {
    lanes: HashMap<Tenant, Lane>,
    /// The pass of the latest grant: where a tenant that starts waiting starts.
    clock: u64,
    /// Where each run sits, for removal by id.
    keys: HashMap<JobId, (Tenant, Key)>,
    /// The arrival number of the next run queued at the back (counts up).
    back: i64,
    /// The arrival number of the next run put back at the head (counts down).
    front: i64,
}

impl FairQueue {
    /// How many runs wait.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no run waits.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `job_id` waits here.
    pub fn contains(&self, job_id: &JobId) -> bool {
        self.keys.contains_key(job_id)
    }

    /// Queues a run behind every run of its tenant and priority. A run already queued stays
    /// where it is.
    pub fn push_back(&mut self, waiting: Waiting) {
        self.back += 1;
        let arrival = self.back;
        self.insert(waiting, arrival);
    }

    /// Puts a run back ahead of every run of its tenant and priority (a grant that could not
    /// be completed keeps its turn).
    pub fn push_front(&mut self, waiting: Waiting) {
        self.front -= 1;
        let arrival = self.front;
        self.insert(waiting, arrival);
    }

    fn insert(&mut self, waiting: Waiting, arrival: i64) {
        if self.keys.contains_key(&waiting.job_id) {
            return;
        }
        let key = (Reverse(waiting.priority), arrival);
        self.keys
            .insert(waiting.job_id.clone(), (waiting.tenant.clone(), key));
        let clock = self.clock;
        self.lanes
            .entry(waiting.tenant.clone())
            .or_insert_with(|| Lane {
                runs: BTreeMap::new(),
                pass: clock,
            })
            .runs
            .insert(key, waiting);
    }

    /// Takes a run out of the queue.
    pub fn remove(&mut self, job_id: &JobId) -> Option<Waiting> {
        let (tenant, key) = self.keys.remove(job_id)?;
        let lane = self.lanes.get_mut(&tenant)?;
        let waiting = lane.runs.remove(&key);
        if lane.runs.is_empty() {
            self.lanes.remove(&tenant);
        }
        waiting
    }

    /// Takes out the run the next free slot goes to, given the slots each tenant holds; `None`
    /// when no run waits or every waiting tenant is at its cap.
    pub fn next(&mut self, share: &FairShare, slots: &Slots) -> Option<Waiting> {
        let mut best: Option<(&Tenant, u64, u64, u64, i64)> = None;
        for (tenant, lane) in &self.lanes {
            let Some(((_, arrival), _)) = lane.runs.first_key_value() else {
                continue;
            };
            let held = slots.held_by(tenant);
            if !share.admits(held) {
                continue;
            }
            let (held, weight) = (
                u64::try_from(held).unwrap_or(u64::MAX),
                share.weight(tenant),
            );
            let better = match best {
                None => true,
                // held / weight < best_held / best_weight, compared without division; then
                // the lower pass, then the older run.
                Some((_, best_held, best_weight, best_pass, best_arrival)) => {
                    (u128::from(held) * u128::from(best_weight))
                        .cmp(&(u128::from(best_held) * u128::from(weight)))
                        .then(lane.pass.cmp(&best_pass))
                        .then(arrival.cmp(&best_arrival))
                        == Ordering::Less
                }
            };
            if better {
                best = Some((tenant, held, weight, lane.pass, *arrival));
            }
        }
        let (tenant, _, weight, pass, _) = best?;
        let tenant = tenant.clone();
        let lane = self.lanes.get_mut(&tenant)?;
        let (_, waiting) = lane.runs.pop_first()?;
        self.clock = self.clock.max(pass);
        lane.pass = pass.saturating_add(STRIDE / weight);
        if lane.runs.is_empty() {
            self.lanes.remove(&tenant);
        }
        self.keys.remove(&waiting.job_id);
        Some(waiting)
    }

    /// Takes out every run whose deadline passed at `now`.
    pub fn take_expired(&mut self, now: Millis) -> Vec<Waiting> {
        let expired: Vec<JobId> = self
            .lanes
            .values()
            .flat_map(|lane| lane.runs.values())
            .filter(|w| w.expired(now))
            .map(|w| w.job_id.clone())
            .collect();
        expired.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Whether any waiting run's deadline passed at `now`.
    pub fn any_expired(&self, now: Millis) -> bool {
        self.lanes
            .values()
            .flat_map(|lane| lane.runs.values())
            .any(|w| w.expired(now))
    }

    /// How many runs of the same tenant are ahead of `job_id` (its place in its tenant's
    /// line), or `None` when it does not wait here.
    pub fn position(&self, job_id: &JobId) -> Option<usize> {
        let (tenant, key) = self.keys.get(job_id)?;
        Some(self.lanes.get(tenant)?.runs.range(..*key).count())
    }
}

/// The runs holding a slot, with their tenants. A map, not counters, so that starting a run's
/// actor again can never leak or double a slot.
#[derive(Debug, Default)]
pub struct Slots {
    holders: HashMap<JobId, Tenant>,
    per_tenant: HashMap<Tenant, usize>,
}

impl Slots {
    /// How many slots are held.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// How many slots `tenant` holds.
    pub fn held_by(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// `job_id` holds a slot for `tenant` (again: no change).
    pub fn insert(&mut self, job_id: JobId, tenant: Tenant) {
        if self.holders.contains_key(&job_id) {
            return;
        }
        *self.per_tenant.entry(tenant.clone()).or_default() += 1;
        self.holders.insert(job_id, tenant);
    }

    /// `job_id` holds no slot any more.
    pub fn remove(&mut self, job_id: &JobId) {
        let Some(tenant) = self.holders.remove(job_id) else {
            return;
        };
        if let Some(count) = self.per_tenant.get_mut(&tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_tenant.remove(&tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(id: &str, tenant: &str, priority: i32) -> Waiting {
        Waiting {
            job_id: JobId::parse(id).unwrap(),
            deadline_at: None,
            tenant: Arc::from(tenant),
            priority,
        }
    }

    fn ids(order: &[Waiting]) -> Vec<&str> {
        order.iter().map(|w| w.job_id.as_str()).collect()
    }

    /// Grants every slot of a pool with `slots` in flight, runs finishing in grant order.
    fn grant_all(queue: &mut FairQueue, share: &FairShare, max: usize) -> Vec<Waiting> {
        let mut held = Slots::default();
        let mut order = Vec::new();
        let mut running = std::collections::VecDeque::new();
        loop {
            while held.len() < max {
                let Some(next) = queue.next(share, &held) else {
                    break;
                };
                held.insert(next.job_id.clone(), next.tenant.clone());
                running.push_back(next.job_id.clone());
                order.push(next);
            }
            match running.pop_front() {
                Some(done) => held.remove(&done),
                None => return order,
            }
        }
    }

    #[test]
    fn one_tenant_is_priority_then_fifo() {
        let mut queue = FairQueue::default();
        for (id, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)] {
            queue.push_back(run(id, "", priority));
        }
        let order = grant_all(&mut queue, &FairShare::default(), 1);
        assert_eq!(ids(&order), ["b", "d", "a", "c", "e"]);
    }

    #[test]
    fn equal_tenants_alternate_and_a_burst_cannot_starve_a_small_tenant() {
        let mut queue = FairQueue::default();
        for i in 0..100 {
            queue.push_back(run(&format!("big-{i}"), "big", 0));
        }
        for i in 0..3 {
            queue.push_back(run(&format!("small-{i}"), "small", 0));
        }
        let order = grant_all(&mut queue, &FairShare::default(), 2);
        let first: Vec<&str> = ids(&order[..6]).into_iter().collect();
        assert_eq!(
            first,
            ["big-0", "small-0", "big-1", "small-1", "big-2", "small-2"]
        );
        assert_eq!(order.len(), 103);
    }

    #[test]
    fn one_slot_alternates_between_tenants_by_weight_whatever_the_arrival_order() {
        let share = FairShare {
            weights: BTreeMap::from([("gold".to_owned(), 2)]),
            ..FairShare::default()
        };
        let mut queue = FairQueue::default();
        // A burst of 9 silver runs first, then 6 gold ones, then 2 bronze ones.
        for i in 0..9 {
            queue.push_back(run(&format!("s{i}"), "silver", 0));
        }
        for i in 0..6 {
            queue.push_back(run(&format!("g{i}"), "gold", 0));
        }
        for i in 0..2 {
            queue.push_back(run(&format!("b{i}"), "bronze", 0));
        }
        let order = grant_all(&mut queue, &share, 1);
        let first: String = ids(&order[..10])
            .iter()
            .map(|id| id.chars().next().unwrap())
            .collect();
        // Gold (weight 2) twice for each silver and bronze; bronze is not starved by the
        // burst queued before it.
        assert_eq!(first, "sgbgsgbgsg");
        assert_eq!(order.len(), 17);
    }

    #[test]
    fn weights_share_the_slots_in_their_ratio() {
        let share = FairShare {
            weights: BTreeMap::from([("gold".to_owned(), 3)]),
            ..FairShare::default()
        };
        let mut queue = FairQueue::default();
        for i in 0..50 {
            queue.push_back(run(&format!("g{i}"), "gold", 0));
            queue.push_back(run(&format!("s{i}"), "silver", 0));
        }
        // 8 slots, nothing finishes: gold takes 6, silver 2.
        let mut held = Slots::default();
        while held.len() < 8 {
            let next = queue.next(&share, &held).unwrap();
            held.insert(next.job_id, next.tenant);
        }
        assert_eq!(held.held_by("gold"), 6);
        assert_eq!(held.held_by("silver"), 2);
    }

    #[test]
    fn a_tenant_at_its_cap_gets_no_slot_even_a_free_one() {
        let share = FairShare {
            max_in_flight_per_tenant: Some(2),
            ..FairShare::default()
        };
        let mut queue = FairQueue::default();
        for i in 0..5 {
            queue.push_back(run(&format!("a{i}"), "a", 0));
        }
        let mut held = Slots::default();
        for _ in 0..2 {
            let next = queue.next(&share, &held).unwrap();
            held.insert(next.job_id, next.tenant);
        }
        assert_eq!(queue.next(&share, &held), None, "a is at its cap");
        queue.push_back(run("b0", "b", 0));
        assert_eq!(queue.next(&share, &held).unwrap().job_id.as_str(), "b0");
        held.remove(&JobId::parse("a0").unwrap());
        assert_eq!(queue.next(&share, &held).unwrap().job_id.as_str(), "a2");
    }

    #[test]
    fn put_back_runs_keep_their_turn_and_removal_and_expiry_work() {
        let mut queue = FairQueue::default();
        queue.push_back(run("a", "", 0));
        queue.push_back(run("b", "", 0));
        let held = Slots::default();
        let first = queue.next(&FairShare::default(), &held).unwrap();
        assert_eq!(first.job_id.as_str(), "a");
        queue.push_front(first);
        assert_eq!(queue.position(&JobId::parse("a").unwrap()), Some(0));
        assert_eq!(queue.position(&JobId::parse("b").unwrap()), Some(1));
        // A duplicate is ignored.
        queue.push_back(run("b", "", 0));
        assert_eq!(queue.len(), 2);
        assert_eq!(
            queue
                .remove(&JobId::parse("a").unwrap())
                .unwrap()
                .job_id
                .as_str(),
            "a"
        );
        assert!(!queue.contains(&JobId::parse("a").unwrap()));
        let mut late = run("c", "t", 0);
        late.deadline_at = Some(10);
        queue.push_back(late);
        assert!(queue.any_expired(10));
        assert!(!queue.any_expired(9));
        assert_eq!(ids(&queue.take_expired(10)), ["c"]);
        assert_eq!(queue.len(), 1);
    }

    proptest! {
        /// Over random arrivals: every run is granted exactly once; no tenant ever holds more
        /// than its cap; and whenever a tenant with waiting runs is passed over for a slot, the
        /// tenant that took it held no more slots for its weight (nobody starves while others
        /// hold more than their share).
        #[test]
        fn grants_are_complete_capped_and_fair(
            arrivals in proptest::collection::vec((0usize..4, -2i32..3), 1..120),
            max in 1usize..6,
            cap in proptest::option::of(1u32..4),
            weights in proptest::collection::vec(1u32..4, 4),
        ) {
            let share = FairShare {
                weights: (0..4).map(|t| (format!("t{t}"), weights[t])).collect(),
                max_in_flight_per_tenant: cap,
                ..FairShare::default()
            };
            let mut queue = FairQueue::default();
            for (i, (tenant, priority)) in arrivals.iter().enumerate() {
                queue.push_back(run(&format!("r{i}"), &format!("t{tenant}"), *priority));
            }
            let mut held = Slots::default();
            let mut running = std::collections::VecDeque::new();
            let mut granted = std::collections::HashSet::new();
            loop {
                while held.len() < max {
                    let waiting_tenants: Vec<String> = (0..4)
                        .map(|t| format!("t{t}"))
                        .filter(|t| queue.lanes.contains_key(t.as_str()))
                        .collect();
                    let Some(next) = queue.next(&share, &held) else { break };
                    let (took, took_held) = (next.tenant.clone(), held.held_by(&next.tenant));
                    for other in &waiting_tenants {
                        let other_held = held.held_by(other);
                        if share.admits(other_held) {
                            let lhs = u64::try_from(took_held).unwrap() * share.weight(other);
                            let rhs = u64::try_from(other_held).unwrap() * share.weight(&took);
                            prop_assert!(lhs <= rhs, "{took} ({took_held}) took a slot before {other} ({other_held})");
                        }
                    }
                    prop_assert!(granted.insert(next.job_id.clone()), "granted twice");
                    held.insert(next.job_id.clone(), next.tenant.clone());
                    if let Some(cap) = cap {
                        prop_assert!(held.held_by(&next.tenant) <= usize::try_from(cap).unwrap());
                    }
                    running.push_back(next.job_id);
                }
                match running.pop_front() {
                    Some(done) => held.remove(&done),
                    None => break,
                }
            }
            prop_assert_eq!(granted.len(), arrivals.len());
            prop_assert!(queue.is_empty());
        }
    }
}
