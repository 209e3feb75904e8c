//! The canonical states: what a run is in cattery, and what a scheduler's answer maps onto.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of a run as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting in cattery for a pool slot.
    Queued,
    /// The dispatch call is under way (committed before the call goes out).
    Dispatching,
    /// The scheduler holds the job but has not started it.
    Pending,
    /// The scheduler runs the job.
    Running,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully; `failureCause` says why.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Dispatching,
        RunState::Pending,
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Dispatching => "dispatching",
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// True for `done`, `failed` and `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Done | RunState::Failed | RunState::Cancelled
        )
    }

    /// True for the states that hold one of the pool's `maxInFlight` slots.
    pub fn holds_slot(self) -> bool {
        matches!(
            self,
            RunState::Dispatching | RunState::Pending | RunState::Running
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`RunState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run state {0:?}; expected one of queued, dispatching, pending, running, done, failed, cancelled"
)]
pub struct UnknownState(pub String);

impl FromStr for RunState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What a scheduler's status word maps onto (the right-hand side of a `statusMap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedState {
    /// Accepted but not started.
    Pending,
    /// Running (also what an unrecognised word reads as).
    Running,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully.
    Failed,
    /// Cancelled at the scheduler.
    Cancelled,
    /// The scheduler no longer has the job (evicted, node lost): re-dispatch or fail with `lost`.
    Lost,
}

impl MappedState {
    /// Every mapped state.
    pub const ALL: [MappedState; 6] = [
        MappedState::Pending,
        MappedState::Running,
        MappedState::Done,
        MappedState::Failed,
        MappedState::Cancelled,
        MappedState::Lost,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MappedState::Pending => "pending",
            MappedState::Running => "running",
            MappedState::Done => "done",
            MappedState::Failed => "failed",
            MappedState::Cancelled => "cancelled",
            MappedState::Lost => "lost",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        MappedState::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for MappedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_round_trip_through_their_names() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
        }
        assert!("finished".parse::<RunState>().is_err());
    }

    #[test]
    fn only_in_flight_states_hold_a_slot() {
        let holding: Vec<_> = RunState::ALL
            .into_iter()
            .filter(|s| s.holds_slot())
            .collect();
        assert_eq!(
            holding,
            [RunState::Dispatching, RunState::Pending, RunState::Running]
        );
    }
}
